"""Build the reviewed series per config and turn a failed build's log into problems a reviewer quotes.

:func:`parse_build_log` reads Kconfig errors (``init/Kconfig:249: unknown
option "Say"``), compiler errors (``kernel/rcfs.c:198:32: error: ...`` with
gcc's function line and source excerpt) and link errors (undefined
references) out of ``build.log``.  :func:`build_configs` builds each config
and, when the configuration itself fails on lines the posted patch adds,
builds once more without those lines (:func:`without_lines`), to find the
compiler errors behind them: a reviewer wants every problem, not the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import HarnessError, InputError, StageError
from harness.kernel import build, config, patches, source
from harness.kernel.build import BuildResult
from harness.review.diff import PatchDiff, parse_diff

_COMPILE = re.compile(r"^(?P<path>[^\s:]+):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)$")
_IN_FUNCTION = re.compile(r"^(?P<path>[^\s:]+): In function [`'‘](?P<func>[^'’`]+)[’'`]:$")
_ECHO = re.compile(r"^\s*(\d+)? \|")  # gcc's source excerpt: "  198 |  code" and "      |   ^"
_KCONFIG = re.compile(r"^(?P<path>\S*Kconfig[^\s:]*):(?P<line>\d+):(?:warning:)? ?(?P<msg>.+)$")
_LINK_FUNC = re.compile(r"in function [`'‘](?P<func>[^'’`]+)[’'`]", re.IGNORECASE)
_UNDEFINED = re.compile(r"undefined reference to [`'‘](?P<sym>[^'’`]+)[’'`]")


@dataclass(frozen=True)
class BuildProblem:
    """One error of a failed build: ``kind`` kconfig, compile, link or make."""

    kind: str
    message: str
    path: str | None = None
    line: int | None = None
    column: int | None = None
    function: str | None = None
    context: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        if self.path is None:
            return self.function or "(no file)"
        col = f":{self.column}" if self.column else ""
        return f"{self.path}:{self.line}{col}" if self.line else self.path

    @property
    def key(self) -> tuple[str, str | None, int | None, str]:
        return (self.kind, self.path, self.line, self.message)


def _relative(path: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if prefix and path.startswith(prefix.rstrip("/") + "/"):
            return path[len(prefix.rstrip("/")) + 1:]
    return path.removeprefix("./")


def parse_build_log(text: str, prefixes: tuple[str, ...] = ()) -> list[BuildProblem]:
    """The errors of a build log, in order, each once; paths relative to the tree (``prefixes``:
    the absolute source and output directories the log may name)."""
    lines = text.splitlines()
    found: list[BuildProblem] = []
    function: dict[str, str] = {}
    link_function: str | None = None
    in_kconfig = False
    for i, raw in enumerate(lines):
        line = raw.rstrip()
        if "scripts/kconfig/conf" in line:
            in_kconfig = True
            continue
        if m := _IN_FUNCTION.match(line):
            function[_relative(m["path"], prefixes)] = m["func"]
            continue
        if m := _COMPILE.match(line):
            path = _relative(m["path"], prefixes)
            context = []
            for follow in lines[i + 1:i + 4]:
                if not _ECHO.match(follow):
                    break
                context.append(follow.rstrip())
            found.append(BuildProblem("compile", f"error: {m['msg']}", path, int(m["line"]),
                                      int(m["col"]) if m["col"] else None, function.get(path),
                                      tuple(context)))
            continue
        if in_kconfig and (m := _KCONFIG.match(line)) and "warning" not in line:
            found.append(BuildProblem("kconfig", m["msg"].strip(), _relative(m["path"], prefixes),
                                      int(m["line"])))
            continue
        if fm := _LINK_FUNC.search(line):
            link_function = fm["func"]
        if um := _UNDEFINED.search(line):
            found.append(BuildProblem("link", f"undefined reference to '{um['sym']}'",
                                      function=link_function))
    unique: dict[tuple[str, str | None, int | None, str], BuildProblem] = {}
    for problem in found:
        unique.setdefault(problem.key, problem)
    problems = list(unique.values())
    if not problems:
        tail = [ln for ln in lines if re.search(r"\*\*\*|Error \d+", ln)][:3]
        if tail:
            problems.append(BuildProblem("make", " | ".join(t.strip() for t in tail)))
    return problems


def without_lines(patch_text: str, drop: set[tuple[str, int]]) -> str:
    """``patch_text`` without the added lines ``drop`` ((path, new line number) pairs), every hunk
    header recounted: the same patch minus those lines."""
    diff = parse_diff(patch_text)
    out: list[str] = []
    head, _, _ = patch_text.partition("\n--- ")
    out.append(head + "\n" if "\n--- " in patch_text else "")
    for fd in diff.files:
        out.append(f"--- {'/dev/null' if fd.created else 'a/' + fd.path}\n"
                   f"+++ {'/dev/null' if fd.deleted else 'b/' + fd.path}\n")
        shift = 0
        for hunk in fd.hunks:
            kept = [ln for ln in hunk.lines if not (ln.kind == "+" and (fd.path, ln.new) in drop)]
            old = sum(ln.kind != "+" for ln in kept)
            new = sum(ln.kind != "-" for ln in kept)
            old_start = 0 if fd.created else hunk.old_start
            new_start = hunk.new_start - shift if new else hunk.new_start - shift - 1
            shift += len(hunk.lines) - len(kept)
            section = hunk.header.split("@@", 2)[2] if hunk.header.count("@@") >= 2 else ""
            out.append(f"@@ -{old_start},{old} +{max(new_start, 0)},{new} @@{section}\n")
            out += [f"{ln.kind}{ln.text}\n" for ln in kept]
    return "".join(out)


@dataclass
class ConfigBuild:
    """One config of the reviewed series: built, or the problems its build met."""

    config: str
    result: BuildResult | None = None
    problems: list[BuildProblem] = field(default_factory=list)
    log: Path | None = None
    error: str | None = None  # the build failed without a problem found in its log

    @property
    def ok(self) -> bool:
        return self.result is not None


def _request(series: str, config_name: str, src: source.Source,
             chain_extra: tuple[str, ...]) -> build.BuildRequest:
    loaded = patches.load_series(series)
    rendered = config.render(config_name, series_chain=loaded.chain + chain_extra)
    return build.BuildRequest(source=src, series=loaded, config=rendered)


def build_config(series: str, config_name: str, src: source.Source,
                 chain_extra: tuple[str, ...] = ()) -> ConfigBuild:
    """Build one config of ``series`` (cached), keeping the problems of a failed build."""
    outcome = ConfigBuild(config_name)
    try:
        request = _request(series, config_name, src, chain_extra)
    except InputError as exc:  # the config cannot be had: the patch's Kconfig lacks a symbol...
        outcome.problems.append(BuildProblem("config", str(exc)))
        return outcome
    _, directory = build.entry_dir(request, build.detect_toolchain())
    outcome.log = directory / "build.log"
    try:
        outcome.result = build.build(request)
    except (StageError, InputError) as exc:
        text = outcome.log.read_text(errors="replace") if outcome.log.is_file() else ""
        prefixes = (str(directory / "src"), str(directory / "out"))
        outcome.problems = [replace(p, configs=(config_name,)) for p in parse_build_log(text, prefixes)]
        if not outcome.problems:
            outcome.error = str(exc)
    except HarnessError as exc:
        outcome.error = str(exc)
    return outcome


def kconfig_lines_to_drop(problems: list[BuildProblem], posted: PatchDiff) -> set[tuple[str, int]]:
    """The Kconfig lines the posted patch adds that the configuration choked on."""
    drop = set()
    for p in problems:
        if p.kind == "kconfig" and p.path and p.line:
            fd = posted.file(p.path)
            for hunk in fd.hunks if fd else ():
                line = hunk.at_new(p.line)
                if line is not None and line.kind == "+":
                    drop.add((p.path, p.line))
    return drop
