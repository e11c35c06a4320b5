"""Config stage: named kernel configs from jinja2 templates, merged and validated.

``kernel-configs/configs.toml`` names each config, its template and its
parameters.  A template renders to a config fragment (``CONFIG_X=y`` and
``# CONFIG_X is not set`` lines).  ``--set SYMBOL=VALUE`` overrides are
applied on top.  Everything here is pure Python; the ``make`` steps that turn
a fragment into a final ``.config`` live in :mod:`harness.kernel.build`, which calls
:func:`merge` and :func:`check_survivors` around them.

Values reach ``.config``, which kbuild includes into make and passes to shell
commands (``CONFIG_LOCALVERSION`` ends up in ``$(shell ...)``), so no value may
hold anything make or a shell would evaluate: a value is a word (``y``, ``m``,
``n``, a number) or a double-quoted string of letters, digits, spaces and
``. _ - + , : / =`` (:func:`check_value`), checked before any work is done.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from harness import cache, resources
from harness.errors import InputError

SYMBOL_RE = re.compile(r"^CONFIG_[A-Za-z0-9_]+$")
_WORD_VALUE = re.compile(r"[A-Za-z0-9_+-]+")
_STRING_VALUE = re.compile(r'"[A-Za-z0-9 ._+,:/=-]*"')
_SET_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET_LINE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def configs_dir() -> Path:
    """The shipped configs (``harness/data/kernel-configs``)."""
    return resources.shipped("kernel-configs")


def config_dirs(directory: Path | None = None) -> list[Path]:
    """Where configs are looked up: ``directory`` alone if given, else
    ``$HARNESS_CONFIGS`` (yours, first) then the shipped ones."""
    return [directory] if directory is not None else resources.search_path("HARNESS_CONFIGS",
                                                                           "kernel-configs")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot read config definitions: {exc}") from None


def load_tables(directory: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``configs.toml`` on the search path, lowest priority (shipped) first."""
    found = [d / "configs.toml" for d in reversed(config_dirs(directory))]
    return [(path, _read_toml(path)) for path in found if path.is_file() or path.parent == directory]


@dataclass(frozen=True)
class ConfigDef:
    """One entry of ``configs.toml``."""

    name: str
    template: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    cpus: int = 1  # vCPUs of its VMs; templates get it as ``cpus`` (above 1: an SMP kernel)


@dataclass(frozen=True)
class ConfigRequest:
    """What a build asks of kconfig: the merged fragment, in order."""

    name: str
    symbols: dict[str, str]
    overrides: dict[str, str]

    def fragment(self) -> str:
        return "".join(format_line(s, v) + "\n" for s, v in self.symbols.items())

    def digest(self) -> str:
        return cache.digest(self.name, self.fragment())

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.name
        sets = ",".join(f"{k.removeprefix('CONFIG_')}={v}" for k, v in self.overrides.items())
        return f"{self.name}[{sets}]"


@dataclass(frozen=True)
class KSymbol:
    name: str
    type: str
    ranges: tuple[tuple[int, int], ...]
    where: str


def format_line(symbol: str, value: str) -> str:
    return f"# {symbol} is not set" if value == "n" else f"{symbol}={value}"


def load_defs(directory: Path | None = None) -> dict[str, ConfigDef]:
    """The named configs; a user's config replaces a shipped one of the same name."""
    defs: dict[str, ConfigDef] = {}
    for path, data in load_tables(directory):
        configs = data.get("configs", {})
        if not isinstance(configs, dict):
            raise InputError(f"{path}: [configs] must be a table of configs")
        for name, entry in configs.items():
            if not isinstance(entry, dict) or "template" not in entry:
                raise InputError(f"{path}: config {name!r} needs a 'template'")
            cpus = entry.get("cpus", 1)
            if type(cpus) is not int or not 1 <= cpus <= 8:
                raise InputError(f"{path}: config {name!r}: cpus = {cpus!r}, expected an integer 1..8")
            defs[name] = ConfigDef(
                name=name,
                template=str(entry["template"]),
                description=str(entry.get("description", "")),
                params=dict(entry.get("params", {})),
                cpus=cpus,
            )
    return defs


def check_value(value: str, where: str) -> None:
    """Refuse a value make or a shell could evaluate (see the module docstring)."""
    if value.startswith('"') or value.endswith('"'):
        if value.startswith('"') != value.endswith('"') or len(value) < 2:
            raise InputError(f"{where}: unbalanced quotes in the value")
        if not _STRING_VALUE.fullmatch(value):
            raise InputError(f"{where}: the string may hold only letters, digits, spaces and "
                             '. _ - + , : / = (nothing make or a shell would evaluate)')
    elif not _WORD_VALUE.fullmatch(value):
        raise InputError(f'{where}: expected y, m, n, a number or a "quoted string" as the value')


def parse_set(text: str) -> tuple[str, str]:
    """Parse one ``--set SYMBOL=VALUE`` (the ``CONFIG_`` prefix is optional)."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected SYMBOL=VALUE, e.g. CONFIG_MAX_RC_SUBSYS=8")
    symbol, value = (part.strip() for part in text.split("=", 1))
    if not symbol.startswith("CONFIG_"):
        symbol = "CONFIG_" + symbol
    if not SYMBOL_RE.match(symbol) or not value:
        raise InputError(f"--set {text!r}: expected SYMBOL=VALUE, e.g. CONFIG_MAX_RC_SUBSYS=8")
    check_value(value, f"--set {text!r}")
    return symbol, value


def parse_fragment(text: str, origin: str) -> dict[str, str]:
    """Read ``CONFIG_X=v`` / ``# CONFIG_X is not set`` lines into an ordered dict."""
    symbols: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        value = _line_value(line)
        if value is not None:
            check_value(value[1], f"{origin}:{lineno}: {value[0]}")
            symbols[value[0]] = value[1]
        elif line and not line.startswith("#"):
            raise InputError(f"{origin}:{lineno}: {line!r} is not a kernel config line")
    return symbols


def render(
    name: str,
    *,
    series_chain: tuple[str, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
    directory: Path | None = None,
) -> ConfigRequest:
    """Render named config ``name`` for a series and apply ``--set`` overrides."""
    defs = load_defs(directory)
    if name not in defs:
        known = ", ".join(sorted(defs)) or "none"
        raise InputError(f"unknown config {name!r}; expected one of: {known}")
    definition = defs[name]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in config_dirs(directory)]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    try:
        text = env.get_template(definition.template).render(
            {**definition.params, "cpus": definition.cpus}, series_chain=series_chain
        )
    except jinja2.TemplateError as exc:
        raise InputError(f"config {name!r} ({definition.template}): {exc}") from None
    symbols = parse_fragment(text, f"{definition.template} (rendered)")
    parsed = dict(parse_set(o) for o in overrides)
    symbols.update(parsed)
    return ConfigRequest(name=name, symbols=symbols, overrides=parsed)


# --- Kconfig -----------------------------------------------------------------

_KCONFIG_TYPES = {"bool", "tristate", "int", "hex", "string", "def_bool", "def_tristate"}


def _number(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def read_kconfig(tree: Path) -> dict[str, KSymbol]:
    """Types and numeric ranges of every symbol declared in ``tree``'s Kconfig files."""
    found: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in filenames:
            if not filename.startswith("Kconfig"):
                continue
            path = Path(dirpath) / filename
            current: dict[str, Any] | None = None
            for raw in path.read_text(errors="replace").splitlines():
                words = raw.split()
                if not words:
                    continue
                if words[0] in ("config", "menuconfig") and len(words) >= 2:
                    entry = found.setdefault(
                        words[1], {"type": "", "ranges": [], "where": str(path.relative_to(tree))}
                    )
                    current = entry
                elif words[0] in ("choice", "endchoice", "menu", "endmenu", "if", "endif",
                                  "source", "comment", "mainmenu"):
                    current = None
                elif current is not None and words[0] in _KCONFIG_TYPES and not current["type"]:
                    current["type"] = words[0].removeprefix("def_")
                elif current is not None and words[0] == "range" and len(words) >= 3:
                    low, high = _number(words[1]), _number(words[2])
                    if low is not None and high is not None:
                        current["ranges"].append((low, high))
    return {
        "CONFIG_" + name: KSymbol("CONFIG_" + name, e["type"], tuple(e["ranges"]), e["where"])
        for name, e in found.items()
    }


def validate(request: ConfigRequest, kconfig: dict[str, KSymbol]) -> None:
    """Check every requested symbol exists, has a value of its type and is in range."""
    problems: list[str] = []
    for symbol, value in request.symbols.items():
        origin = "--set " if symbol in request.overrides else ""
        sym = kconfig.get(symbol)
        if sym is None and value == "n":
            continue  # a symbol this tree lacks is trivially not set
        if sym is None:
            problems.append(f"{origin}{symbol}: no such symbol in this tree's Kconfig")
            continue
        if sym.type == "bool" and value not in ("y", "n"):
            problems.append(f"{origin}{symbol}={value}: expected y or n ({sym.where})")
        elif sym.type == "tristate" and value not in ("y", "m", "n"):
            problems.append(f"{origin}{symbol}={value}: expected y, m or n ({sym.where})")
        elif sym.type in ("int", "hex"):
            number = _number(value) if value != "n" else None
            if number is None:
                problems.append(f"{origin}{symbol}={value}: expected an integer ({sym.where})")
            elif sym.ranges and not any(lo <= number <= hi for lo, hi in sym.ranges[:1]):
                lo, hi = sym.ranges[0]
                problems.append(
                    f"{origin}{symbol}={value}: out of range, allowed {lo}..{hi} ({sym.where})"
                )
        elif sym.type == "string" and not (value.startswith('"') and value.endswith('"')):
            problems.append(f'{origin}{symbol}={value}: expected a quoted string ("...")')
    if problems:
        raise InputError(f"config {request.label!r}: " + "; ".join(problems))


# --- .config merging -----------------------------------------------------------


def _line_value(line: str) -> tuple[str, str] | None:
    """``(symbol, value)`` of a ``CONFIG_X=v`` or ``# CONFIG_X is not set`` line."""
    m = _SET_LINE.match(line)
    if m:
        return m.group(1), m.group(2)
    m = _UNSET_LINE.match(line)
    return (m.group(1), "n") if m else None


def read_dotconfig(text: str) -> dict[str, str]:
    """Values of a ``.config``; symbols that are 'not set' map to ``n``."""
    return dict(v for line in text.splitlines() if (v := _line_value(line)) is not None)


def merge(dotconfig: str, symbols: dict[str, str]) -> str:
    """Replace the lines of ``symbols`` in ``dotconfig``; append those not present."""
    remaining = dict(symbols)
    out: list[str] = []
    for line in dotconfig.splitlines():
        value = _line_value(line)
        if value is not None and value[0] in remaining:
            symbol = value[0]
            out.append(format_line(symbol, remaining.pop(symbol)))
        else:
            out.append(line)
    out.extend(format_line(s, v) for s, v in remaining.items())
    return "\n".join(out) + "\n"


def _normalise(value: str) -> str:
    number = _number(value)
    return str(number) if number is not None else value


def lost_symbols(symbols: dict[str, str], dotconfig: str) -> list[str]:
    """``SYMBOL wanted W, got A`` for each symbol whose value did not survive."""
    final = read_dotconfig(dotconfig)
    lost: list[str] = []
    for symbol, wanted in symbols.items():
        actual = final.get(symbol, "n")
        if _normalise(actual) != _normalise(wanted):
            shown = "not set" if actual == "n" else actual
            lost.append(f"{symbol} wanted {'not set' if wanted == 'n' else wanted}, got {shown}")
    return lost


def check_survivors(request: ConfigRequest, dotconfig: str) -> None:
    """Every requested symbol must have its value in the final ``.config``."""
    lost = lost_symbols(request.symbols, dotconfig)
    if lost:
        raise InputError(
            f"config {request.label!r}: symbols did not survive make oldconfig "
            f"(missing dependencies?): " + "; ".join(lost)
        )
