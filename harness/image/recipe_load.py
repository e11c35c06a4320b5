"""Reading and validating ``recipe.toml``: every problem is a one-line InputError naming the key."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import archive
from harness.errors import InputError
from harness.image.debversion import VersionRange
from harness.image.recipe import (
    ExtraFile,
    Group,
    Network,
    Package,
    Program,
    Recipe,
    User,
    recipe_dirs,
)

PACKAGES = ("busybox", "dropbear")

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_IPV4_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
_RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


class _Table:
    """Typed access to one TOML table, refusing unknown keys."""

    def __init__(self, data: Any, where: str, recipe: Path) -> None:
        if not isinstance(data, dict):
            raise InputError(f"{recipe}: {where} must be a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.recipe = recipe
        self.used: set[str] = set()

    def fail(self, msg: str) -> InputError:
        return InputError(f"{self.recipe}: {self.where}: {msg}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.fail(f"missing key {key!r}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(f"{key!r} must be {names}, not {type(value).__name__}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(f"unknown key(s) {', '.join(map(repr, unknown))}")

    def tables(self, key: str, where: str, required: bool = False) -> list[_Table]:
        """The array of tables under ``key`` (``[[key]]``), each as a :class:`_Table`."""
        entries = self.get(key, list) if required else self.get(key, list, [])
        return [_Table(entry, f"{where}[{i}]", self.recipe) for i, entry in enumerate(entries)]


def _guest_path(t: _Table, key: str, value: str) -> str:
    if not value.startswith("/"):
        raise t.fail(f"{key} {value!r} must be an absolute guest path")
    try:
        return "/" + archive.normalize_member(value[1:], what=key)
    except InputError as exc:
        raise t.fail(str(exc)) from None


def _ipv4(t: _Table, key: str, default: str) -> str:
    value: str = t.get(key, str, default)
    m = _IPV4_RE.match(value)
    if not m or any(int(g) > 255 for g in m.groups()):
        raise t.fail(f"{key} {value!r} is not an IPv4 address")
    return value


def _id(t: _Table, key: str, default: Any = ...) -> int:
    value: int = t.get(key, int, default)
    if not 0 <= value <= 65533:
        raise t.fail(f"{key} {value} out of range 0..65533")
    return value


def _local_file(t: _Table, key: str, base: Path) -> tuple[Path, bytes]:
    rel: str = t.get(key, str)
    path = (base / rel).resolve()
    try:
        return path, path.read_bytes()
    except OSError as exc:
        raise t.fail(f"{key} {rel!r}: cannot read {path} ({exc.strerror})") from None


def _unique(t: _Table, what: str, values: Sequence[object]) -> None:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            raise t.fail(f"{what} {v!r} appears twice")
        seen.add(v)


def _parse_package(name: str, data: Any, recipe: Path) -> Package:
    t = _Table(data, f"[packages.{name}]", recipe)
    if "version" in t.data or "files" in t.data:
        raise t.fail("'version' and 'files' (an exact Debian revision and its sha256 sums) are no "
                     "longer used: name the upstream versions instead, e.g. upstream = \">=1.35, <1.38\"")
    text: str = t.get("upstream", str)
    try:
        upstream = VersionRange.parse(text)
    except InputError as exc:
        raise t.fail(f"upstream: {exc}") from None
    source: str = t.get("source", str, name)
    if not re.match(r"^[a-z0-9][a-z0-9.+-]+$", source):
        raise t.fail(f"source {source!r} is not a Debian source package name")
    config = options = None
    if name == "busybox" and "config" in t.data:
        config = _local_file(t, "config", recipe.parent)[1]
    elif name == "dropbear":
        options = _local_file(t, "options", recipe.parent)[1]
    t.done()
    return Package(name, source, upstream, config, options)


def _parse_network(top: _Table) -> Network:
    nt = _Table(top.get("network", dict, {}), "[network]", top.recipe)
    defaults = Network()
    network = Network(
        address=_ipv4(nt, "address", defaults.address),
        prefix=nt.get("prefix", int, defaults.prefix),
        gateway=_ipv4(nt, "gateway", defaults.gateway),
        ssh_port=nt.get("ssh_port", int, defaults.ssh_port),
    )
    nt.done()
    if not 1 <= network.prefix <= 30:
        raise nt.fail(f"prefix {network.prefix} out of range 1..30")
    if not 1 <= network.ssh_port <= 65535:
        raise nt.fail(f"ssh_port {network.ssh_port} out of range")
    return network


def _parse_user(ut: _Table) -> User:
    name: str = ut.get("name", str)
    if not _NAME_RE.match(name):
        raise ut.fail(f"name {name!r} is not a valid user name")
    uid = _id(ut, "uid")
    gid = _id(ut, "gid", uid)
    home = _guest_path(ut, "home", ut.get("home", str, "/root" if uid == 0 else f"/home/{name}"))
    shell = _guest_path(ut, "shell", ut.get("shell", str, "/bin/sh"))
    keys = ut.get("authorized_keys", list, [])
    if not all(isinstance(k, str) and k.strip() and "\n" not in k for k in keys):
        raise ut.fail("authorized_keys must be a list of one-line public keys")
    ut.done()
    return User(name, uid, gid, home, shell, tuple(keys))


def _parse_users(top: _Table) -> list[User]:
    users = [_parse_user(ut) for ut in top.tables("users", "users", required=True)]
    if not users:
        raise top.fail("at least one [[users]] entry is needed")
    _unique(top, "user name", [u.name for u in users])
    _unique(top, "uid", [u.uid for u in users])
    return users


def _parse_groups(top: _Table, users: Sequence[User]) -> list[Group]:
    groups: list[Group] = []
    known = {u.name for u in users}
    for gt in top.tables("groups", "groups"):
        name: str = gt.get("name", str)
        if not _NAME_RE.match(name):
            raise gt.fail(f"name {name!r} is not a valid group name")
        members = gt.get("members", list, [])
        for m in members:
            if m not in known:
                raise gt.fail(f"member {m!r} is not a user of this recipe")
        groups.append(Group(name, _id(gt, "gid"), tuple(members)))
        gt.done()
    # Every user gets a group of its own name (unless its gid is already named).
    named = {g.gid for g in groups}
    for u in users:
        if u.gid not in named:
            groups.append(Group(u.name, u.gid))
            named.add(u.gid)
    if 5 not in named:
        groups.append(Group("tty", 5))  # devpts is mounted with gid=5
    _unique(top, "group name", [g.name for g in groups])
    _unique(top, "gid", [g.gid for g in groups])
    return groups


def _parse_programs(top: _Table, base: Path) -> list[Program]:
    programs: list[Program] = []
    for pt in top.tables("programs", "programs"):
        name: str = pt.get("name", str)
        if not _NAME_RE.match(name):
            raise pt.fail(f"name {name!r}: lower-case letters, digits, '_' and '-' only")
        src_path, src = _local_file(pt, "source", base)
        install = _guest_path(pt, "install", pt.get("install", str, f"/bin/{name}"))
        cflags = pt.get("cflags", list, [])
        if not all(isinstance(c, str) for c in cflags):
            raise pt.fail("cflags must be a list of strings")
        pt.done()
        programs.append(Program(name, src, src_path, install, tuple(cflags)))
    _unique(top, "program name", [p.name for p in programs])
    return programs


def _parse_file(ft: _Table, base: Path) -> ExtraFile:
    path = _guest_path(ft, "path", ft.get("path", str))
    if ("content" in ft.data) == ("source" in ft.data):
        raise ft.fail("give exactly one of 'content' and 'source'")
    if "content" in ft.data:
        content = ft.get("content", str).encode()
    else:
        content = _local_file(ft, "source", base)[1]
    mode = ft.get("mode", int, 0o644)
    if not 0 <= mode <= 0o7777:
        raise ft.fail(f"mode {mode:o} is not a permission mode")
    extra = ExtraFile(path, content, mode, _id(ft, "uid", 0), _id(ft, "gid", 0))
    ft.done()
    return extra


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"image recipe {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"image recipe {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"image recipe {path}: malformed TOML: {exc}") from None


def load_recipe(path: Path | str) -> Recipe:
    """Parse and validate a recipe (a ``recipe.toml`` or its directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "recipe.toml"
    raw = _read_toml(path)
    path = path.resolve()
    base = path.parent
    top = _Table(raw, "top level", path)
    name: str = top.get("name", str)
    if not _RECIPE_NAME_RE.match(name):
        raise top.fail(f"name {name!r}: letters, digits, '.', '_' and '-' only")
    hostname: str = top.get("hostname", str, "guest")
    if not _HOSTNAME_RE.match(hostname):
        raise top.fail(f"hostname {hostname!r} is not a valid host name")
    init_path, init_bytes = _local_file(top, "init", base)
    try:
        init_source = init_bytes.decode()
    except UnicodeDecodeError:
        raise top.fail(f"init template {init_path} is not UTF-8") from None
    network = _parse_network(top)
    pt = _Table(top.get("packages", dict), "[packages]", path)
    packages = {pkg: _parse_package(pkg, pt.get(pkg, dict), path) for pkg in PACKAGES}
    pt.done()
    users = _parse_users(top)
    groups = _parse_groups(top, users)
    programs = _parse_programs(top, base)
    files = [_parse_file(ft, base) for ft in top.tables("files", "files")]
    top.done()
    return Recipe(path=path, name=name, hostname=hostname, init_template=init_path,
                  init_source=init_source, network=network, packages=packages,
                  users=tuple(users), groups=tuple(groups), programs=tuple(programs),
                  files=tuple(files))


def resolve_recipe(spec: str | Path | None = None) -> Recipe:
    """A recipe by name (``images/<name>/recipe.toml``) or by path; default "default"."""
    spec = spec or "default"
    if isinstance(spec, Path) or "/" in spec or spec.endswith(".toml"):
        return load_recipe(spec)
    path = next((d / str(spec) / "recipe.toml" for d in recipe_dirs()
                 if (d / str(spec) / "recipe.toml").is_file()), None)
    if path is None:
        known = sorted({p.parent.name for d in recipe_dirs() for p in d.glob("*/recipe.toml")})
        raise InputError(f"no image recipe {spec!r} (known: {', '.join(known) or 'none'})")
    return load_recipe(path)
