"""Guest image stage: a gzip'd newc initramfs for the i386 2.6.20 guest.

A recipe (``images/<name>/recipe.toml``) declares everything the image holds:
busybox and dropbear (Debian source packages pinned by version and sha256),
users, extra files, small programs compiled for the guest and the template of
``/init``.  :func:`build_image` turns it into ``images/<recipe-hash>/`` in the
cache::

    initramfs.cpio.gz     the image (owners and modes set from the recipe)
    keys/host_ed25519     the image's ssh host key (OpenSSH format; .pub beside)
    keys/<user>_ed25519   one client key per user (OpenSSH format, mode 0600)
    init                  the rendered /init, for reference
    contents.txt          one line per cpio member
    image.json            manifest, written last

Guest binaries are built with musl for i386 (glibc-static binaries do not run
on 2.6.20) and cached on their own in ``userland/<name>-<key>/``, keyed by
source sha256, configuration and toolchain: changing the init template or
the users re-assembles the image in about a second without recompiling.
Debian sources are downloaded once into ``downloads/debian/`` with a private
apt configuration (a ``deb-src`` twin of the system's Debian sources), so
neither root nor a change to ``/etc/apt`` is needed.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from harness import archive, cache, proc, progress, resources
from harness.archive import CpioMember
from harness.errors import InputError, StageError
from harness.kernel import config
from harness.kernel.build import MAKE_ENV

# Bump when the build or assembly logic changes what an image contains.
IMAGE_FORMAT = "1"
USERLAND_FORMAT = "1"

# --- the serial-console protocol of /init ---------------------------------------

MILESTONE_PREFIX = "HARNESS-MILESTONE:"
MILESTONE_INIT_START = "HARNESS-MILESTONE: init-start"
MILESTONE_NETWORK_UP = "HARNESS-MILESTONE: network-up"
MILESTONE_SSHD_UP = "HARNESS-MILESTONE: sshd-up"
#: followed by a reason; init then idles so the console can be read
MILESTONE_FAILED = "HARNESS-MILESTONE: init-failed"
#: followed by "halt", "poweroff" or "reboot"; the guest then restarts (QEMU
#: exits with -no-reboot)
MILESTONE_SHUTDOWN = "HARNESS-MILESTONE: shutdown"
#: the lines a good boot prints, in order; the last one means "ssh is ready"
BOOT_MILESTONES = (MILESTONE_INIT_START, MILESTONE_NETWORK_UP, MILESTONE_SSHD_UP)

HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"

#: device nodes /init creates (2.6.20 has no devtmpfs): name, type, major, minor, mode
DEVICES: tuple[tuple[str, str, int, int, int], ...] = (
    ("console", "c", 5, 1, 0o600),
    ("null", "c", 1, 3, 0o666),
    ("zero", "c", 1, 5, 0o666),
    ("full", "c", 1, 7, 0o666),
    ("random", "c", 1, 8, 0o666),
    ("urandom", "c", 1, 9, 0o666),
    ("kmsg", "c", 1, 11, 0o600),
    ("tty", "c", 5, 0, 0o666),
    ("ptmx", "c", 5, 2, 0o666),
    ("ttyS0", "c", 4, 64, 0o600),
)

# --- guest toolchain ---------------------------------------------------------------

GUEST_GCC = "i686-linux-gnu-gcc"
GUEST_STRIP = "i686-linux-gnu-strip"
MUSL_SPECS = Path("/usr/lib/i386-linux-musl/musl-gcc.specs")
MUSL_LIBC = Path("/usr/lib/i386-linux-musl/libc.a")
TOOLCHAIN_INSTALL = (
    "sudo dpkg --add-architecture i386 && sudo apt-get update && "
    "sudo apt-get install musl-dev:i386 gcc-i686-linux-gnu binutils-i686-linux-gnu"
)
#: Debian packages the image stage needs on the host (for `harness doctor`, CI)
APT_PACKAGES = (
    "musl-dev:i386",  # pulls gcc-i686-linux-gnu and binutils-i686-linux-gnu
    "gcc-i686-linux-gnu",
    "binutils-i686-linux-gnu",
    "linux-libc-dev",  # kernel headers for busybox
    "gcc",  # busybox's kconfig runs on the host
    "make",
    "bzip2",
    "xz-utils",
    "openssh-client",  # ssh-keygen
    "apt",  # apt-get source
)

# Kernel headers for busybox: musl has none of its own.
KERNEL_HEADER_LINKS = {
    "linux": Path("/usr/include/linux"),
    "asm-generic": Path("/usr/include/asm-generic"),
    "mtd": Path("/usr/include/mtd"),
    "asm": Path("/usr/include/x86_64-linux-gnu/asm"),
}

DROPBEAR_PROGRAMS = ("dropbear", "dropbearkey")
DROPBEAR_CONFIGURE = (
    "--enable-static",
    "--disable-harden",
    "--disable-zlib",
    "--disable-lastlog",
    "--disable-utmp",
    "--disable-utmpx",
    "--disable-wtmp",
    "--disable-wtmpx",
    "--disable-pututline",
    "--disable-pututxline",
    "--disable-loginfunc",
)
PROGRAM_CFLAGS = ("-Os", "-Wall", "-Wextra")
OLDCONFIG_ANSWERS = "\n" * 4000

# Used when the host has no Debian apt source to twin.
FALLBACK_DEB_SRC = """\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def images_dir() -> Path:
    """The shipped recipes (``harness/data/images``)."""
    return resources.shipped("images")


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up by name: ``$HARNESS_IMAGES`` (yours, first), then the shipped."""
    return resources.search_path("HARNESS_IMAGES", "images")


# =====================================================================================
# Recipe


@dataclass(frozen=True)
class SourceFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class Package:
    """A Debian source package: ``apt-get source NAME=VERSION``."""

    name: str  # busybox | dropbear
    source: str  # Debian source package name
    version: str  # Debian version, epoch included
    files: tuple[SourceFile, ...]
    config: bytes | None = None  # busybox: config fragment
    options: bytes | None = None  # dropbear: localoptions.h

    @property
    def orig(self) -> SourceFile:
        """The upstream tarball (the only file that is built)."""
        return next(f for f in self.files if ".orig.tar." in f.name and not f.name.endswith(".asc"))


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    authorized_keys: tuple[str, ...] = ()  # extra keys besides the generated one


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtraFile:
    path: str  # absolute guest path
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Program:
    """A single-file C program compiled statically for the guest."""

    name: str
    source: bytes
    source_path: Path
    install: str
    cflags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Network:
    address: str = "10.0.2.15"
    prefix: int = 24
    gateway: str = "10.0.2.2"
    ssh_port: int = 22

    @property
    def netmask(self) -> str:
        bits = (0xFFFFFFFF << (32 - self.prefix)) & 0xFFFFFFFF
        return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    hostname: str
    init_template: Path
    init_source: str
    network: Network
    packages: Mapping[str, Package]
    users: tuple[User, ...]
    groups: tuple[Group, ...]
    programs: tuple[Program, ...]
    files: tuple[ExtraFile, ...]

    def canonical(self) -> dict[str, Any]:
        """Everything that determines the image, file contents as sha256."""

        def sha(data: bytes | str | None) -> str | None:
            if data is None:
                return None
            raw = data.encode() if isinstance(data, str) else data
            return hashlib.sha256(raw).hexdigest()

        return {
            "format": IMAGE_FORMAT,
            "name": self.name,
            "hostname": self.hostname,
            "init": sha(self.init_source),
            "network": {
                "address": self.network.address,
                "prefix": self.network.prefix,
                "gateway": self.network.gateway,
                "ssh_port": self.network.ssh_port,
            },
            "packages": {
                name: {
                    "source": p.source,
                    "version": p.version,
                    "files": [[f.name, f.sha256] for f in p.files],
                    "config": sha(p.config),
                    "options": sha(p.options),
                }
                for name, p in sorted(self.packages.items())
            },
            "users": [
                [u.name, u.uid, u.gid, u.home, u.shell, list(u.authorized_keys)]
                for u in self.users
            ],
            "groups": [[g.name, g.gid, list(g.members)] for g in self.groups],
            "programs": [
                [p.name, sha(p.source), p.install, list(p.cflags)] for p in self.programs
            ],
            "files": [[f.path, sha(f.content), f.mode, f.uid, f.gid] for f in self.files],
        }

    @property
    def recipe_hash(self) -> str:
        """Stable across comments, key order and the recipe's location."""
        return cache.digest(json.dumps(self.canonical(), sort_keys=True), length=16)

    def user(self, name: str) -> User:
        for u in self.users:
            if u.name == name:
                return u
        raise InputError(f"recipe {self.name}: no user {name!r}")


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
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(f"{key!r} must be {names}, not {type(value).__name__}")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(f"unknown key(s) {', '.join(map(repr, unknown))}")


_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_IPV4_RE = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _guest_path(t: _Table, key: str, value: str) -> str:
    if not value.startswith("/"):
        raise t.fail(f"{key} {value!r} must be an absolute guest path")
    try:
        archive.normalize_member(value[1:], what=f"{key}")
    except InputError as exc:
        raise t.fail(str(exc)) from None
    return "/" + archive.normalize_member(value[1:])


def _ipv4(t: _Table, key: str) -> str:
    value: str = t.get(key, str)
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


def _parse_package(name: str, data: Any, recipe: Path) -> Package:
    t = _Table(data, f"[packages.{name}]", recipe)
    version: str = t.get("version", str)
    if not re.match(r"^(\d+:)?[0-9][A-Za-z0-9.+~-]*$", version):
        raise t.fail(f"version {version!r} is not a Debian version")
    source: str = t.get("source", str, name)
    files: list[SourceFile] = []
    raw_files = t.get("files", list)
    for i, entry in enumerate(raw_files):
        ft = _Table(entry, f"[packages.{name}] files[{i}]", recipe)
        fname: str = ft.get("name", str)
        sha: str = ft.get("sha256", str)
        ft.done()
        if "/" in fname or fname in ("", ".", ".."):
            raise ft.fail(f"name {fname!r} must be a plain file name")
        if not _SHA_RE.match(sha):
            raise ft.fail(f"sha256 of {fname} must be 64 lower-case hex digits")
        files.append(SourceFile(fname, sha))
    origs = [f for f in files if ".orig.tar." in f.name and not f.name.endswith(".asc")]
    if len(origs) != 1:
        raise t.fail("files must list exactly one upstream .orig.tar.* file")
    config = options = None
    if name == "busybox":
        if "config" in t.data:
            config = _local_file(t, "config", recipe.parent)[1]
    elif name == "dropbear":
        options = _local_file(t, "options", recipe.parent)[1]
    t.done()
    return Package(name, source, version, tuple(files), config, options)


def load_recipe(path: Path | str) -> Recipe:
    """Parse and validate a recipe; any problem is a one-line :class:`InputError`."""
    path = Path(path)
    if path.is_dir():
        path = path / "recipe.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"image recipe {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"image recipe {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"image recipe {path}: malformed TOML: {exc}") from None
    path = path.resolve()
    base = path.parent
    top = _Table(raw, "top level", path)

    name: str = top.get("name", str)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise top.fail(f"name {name!r}: letters, digits, '.', '_' and '-' only")
    hostname: str = top.get("hostname", str, "guest")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$", hostname):
        raise top.fail(f"hostname {hostname!r} is not a valid host name")
    init_path, init_bytes = _local_file(top, "init", base)
    try:
        init_source = init_bytes.decode()
    except UnicodeDecodeError:
        raise top.fail(f"init template {init_path} is not UTF-8") from None

    nt = _Table(top.get("network", dict, {}), "[network]", path)
    defaults = Network()
    network = Network(
        address=_ipv4(nt, "address") if "address" in nt.data else defaults.address,
        prefix=nt.get("prefix", int, defaults.prefix),
        gateway=_ipv4(nt, "gateway") if "gateway" in nt.data else defaults.gateway,
        ssh_port=nt.get("ssh_port", int, defaults.ssh_port),
    )
    nt.used |= {"address", "gateway"}
    nt.done()
    if not 1 <= network.prefix <= 30:
        raise nt.fail(f"prefix {network.prefix} out of range 1..30")
    if not 1 <= network.ssh_port <= 65535:
        raise nt.fail(f"ssh_port {network.ssh_port} out of range")

    pt = _Table(top.get("packages", dict), "[packages]", path)
    packages = {}
    for pkg in ("busybox", "dropbear"):
        packages[pkg] = _parse_package(pkg, pt.get(pkg, dict), path)
    pt.done()

    users: list[User] = []
    for i, entry in enumerate(top.get("users", list)):
        ut = _Table(entry, f"users[{i}]", path)
        uname: str = ut.get("name", str)
        if not _NAME_RE.match(uname):
            raise ut.fail(f"name {uname!r} is not a valid user name")
        uid = _id(ut, "uid")
        gid = _id(ut, "gid", uid)
        default_home = "/root" if uid == 0 else f"/home/{uname}"
        home = _guest_path(ut, "home", ut.get("home", str, default_home))
        shell = _guest_path(ut, "shell", ut.get("shell", str, "/bin/sh"))
        keys = ut.get("authorized_keys", list, [])
        if not all(isinstance(k, str) and k.strip() and "\n" not in k for k in keys):
            raise ut.fail("authorized_keys must be a list of one-line public keys")
        ut.done()
        users.append(User(uname, uid, gid, home, shell, tuple(keys)))
    if not users:
        raise top.fail("at least one [[users]] entry is needed")
    _unique(top, "user name", [u.name for u in users])
    _unique(top, "uid", [u.uid for u in users])

    groups: list[Group] = []
    for i, entry in enumerate(top.get("groups", list, [])):
        gt = _Table(entry, f"groups[{i}]", path)
        gname: str = gt.get("name", str)
        if not _NAME_RE.match(gname):
            raise gt.fail(f"name {gname!r} is not a valid group name")
        members = gt.get("members", list, [])
        known = {u.name for u in users}
        for m in members:
            if m not in known:
                raise gt.fail(f"member {m!r} is not a user of this recipe")
        groups.append(Group(gname, _id(gt, "gid"), tuple(members)))
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

    programs: list[Program] = []
    for i, entry in enumerate(top.get("programs", list, [])):
        prt = _Table(entry, f"programs[{i}]", path)
        pname: str = prt.get("name", str)
        if not _NAME_RE.match(pname):
            raise prt.fail(f"name {pname!r}: lower-case letters, digits, '_' and '-' only")
        src_path, src = _local_file(prt, "source", base)
        install = _guest_path(prt, "install", prt.get("install", str, f"/bin/{pname}"))
        cflags = prt.get("cflags", list, [])
        if not all(isinstance(c, str) for c in cflags):
            raise prt.fail("cflags must be a list of strings")
        prt.done()
        programs.append(Program(pname, src, src_path, install, tuple(cflags)))
    _unique(top, "program name", [p.name for p in programs])

    files: list[ExtraFile] = []
    for i, entry in enumerate(top.get("files", list, [])):
        ftab = _Table(entry, f"files[{i}]", path)
        fpath = _guest_path(ftab, "path", ftab.get("path", str))
        if ("content" in ftab.data) == ("source" in ftab.data):
            raise ftab.fail("give exactly one of 'content' and 'source'")
        if "content" in ftab.data:
            content = ftab.get("content", str).encode()
        else:
            content = _local_file(ftab, "source", base)[1]
        mode = ftab.get("mode", int, 0o644)
        if not 0 <= mode <= 0o7777:
            raise ftab.fail(f"mode {mode:o} is not a permission mode")
        files.append(ExtraFile(fpath, content, mode, _id(ftab, "uid", 0), _id(ftab, "gid", 0)))
        ftab.done()

    top.done()
    return Recipe(
        path=path,
        name=name,
        hostname=hostname,
        init_template=init_path,
        init_source=init_source,
        network=network,
        packages=packages,
        users=tuple(users),
        groups=tuple(groups),
        programs=tuple(programs),
        files=tuple(files),
    )


def _unique(t: _Table, what: str, values: Sequence[object]) -> None:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            raise t.fail(f"{what} {v!r} appears twice")
        seen.add(v)


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


# =====================================================================================
# /init


def render_init(recipe: Recipe) -> str:
    """Render the recipe's /init template."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    context = {
        "recipe_name": recipe.name,
        "hostname": recipe.hostname,
        "network": {
            "address": recipe.network.address,
            "prefix": recipe.network.prefix,
            "netmask": recipe.network.netmask,
            "gateway": recipe.network.gateway,
            "ssh_port": recipe.network.ssh_port,
        },
        "ssh_port_hex": f"{recipe.network.ssh_port:04X}",
        "host_key": HOST_KEY_PATH,
        "milestones": {
            "prefix": MILESTONE_PREFIX,
            "init_start": MILESTONE_INIT_START,
            "network_up": MILESTONE_NETWORK_UP,
            "sshd_up": MILESTONE_SSHD_UP,
            "failed": MILESTONE_FAILED,
            "shutdown": MILESTONE_SHUTDOWN,
        },
        "devices": [
            {"name": n, "type": t, "major": ma, "minor": mi, "mode": mo}
            for n, t, ma, mi, mo in DEVICES
        ],
        "users": [{"name": u.name, "uid": u.uid, "home": u.home} for u in recipe.users],
    }
    where = recipe.init_template
    try:
        text = env.from_string(recipe.init_source).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"{where}: line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"{where}: {exc.message}") from None
    if not text.startswith("#!"):
        raise InputError(f"{where}: /init must start with a #! line")
    return text


# =====================================================================================
# Toolchain and prerequisites


@dataclass(frozen=True)
class GuestToolchain:
    cc: tuple[str, ...]
    strip: str
    id: str


def guest_toolchain() -> GuestToolchain:
    """The musl i386 cross toolchain, or a StageError saying how to install it."""
    missing = [str(p) for p in (MUSL_SPECS, MUSL_LIBC) if not p.is_file()]
    missing += [t for t in (GUEST_GCC, GUEST_STRIP) if proc.which(t) is None]
    if missing:
        raise StageError(
            f"guest toolchain (musl for i386) missing: {', '.join(missing)}; "
            f"install it with: {TOOLCHAIN_INSTALL}"
        )
    version = proc.run([GUEST_GCC, "--version"], what=GUEST_GCC).stdout.splitlines()[0]
    headers = Path("/usr/include/linux/version.h")
    tc_id = cache.digest(
        version,
        cache.file_sha256(MUSL_LIBC),
        cache.file_sha256(MUSL_SPECS),
        headers.read_bytes() if headers.is_file() else b"",
    )
    return GuestToolchain((GUEST_GCC, "-specs", str(MUSL_SPECS)), GUEST_STRIP, tc_id)


def check_prerequisites() -> list[str]:
    """Problems that would stop :func:`build_image`, each with its fix (for doctor)."""
    problems = []
    try:
        guest_toolchain()
    except StageError as exc:
        problems.append(str(exc))
    for tool, pkg in (("ssh-keygen", "openssh-client"), ("make", "make"), ("gcc", "gcc")):
        if proc.which(tool) is None:
            problems.append(f"{tool} missing: sudo apt-get install {pkg}")
    for target in KERNEL_HEADER_LINKS.values():
        if not target.is_dir():
            problems.append(f"{target} missing (kernel headers for busybox): "
                            "sudo apt-get install linux-libc-dev")
    if proc.which("apt-get") is None:
        problems.append("apt-get missing: Debian sources must be placed by hand in "
                        f"{cache.root() / 'downloads' / 'debian'}")
    return problems


def _check_static_i386(path: Path) -> None:
    """Refuse a binary that would not run in the guest (not i386, or dynamic)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise StageError(f"{path}: not a 32-bit little-endian ELF file")
    e_machine = struct.unpack_from("<H", data, 18)[0]
    if e_machine != 3:
        raise StageError(f"{path}: ELF machine {e_machine}, expected 3 (i386)")
    phoff, = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    for i in range(phnum):
        p_type, = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            raise StageError(f"{path}: dynamically linked; the guest has no libraries")


# =====================================================================================
# Debian sources


def _deb822_stanzas(text: str) -> Iterator[list[tuple[str, str]]]:
    """Yield deb822 stanzas as ordered (field, raw value) lists (continuations kept)."""
    stanza: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza = []
        elif line.startswith("#"):
            continue
        elif line[0] in " \t" and stanza:
            key, value = stanza[-1]
            stanza[-1] = (key, value + "\n" + line)
        elif ":" in line:
            key, _, value = line.partition(":")
            stanza.append((key.strip(), value.strip()))
    if stanza:
        yield stanza


def deb_src_twin(etc_apt: Path = Path("/etc/apt")) -> str:
    """deb822 ``deb-src`` stanzas mirroring the host's Debian ``deb`` sources.

    Both deb822 ``.sources`` files and one-line ``.list`` entries are read;
    only sources whose URI mentions "debian" are twinned (third-party
    repositories have no source packages we want).  Without any, the Debian
    12 archive is used.
    """
    out: list[str] = []
    sources: list[Path] = []
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        sources = sorted(d.glob("*.sources"))
    for f in sources:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in _deb822_stanzas(text):
            fields = {k.lower(): v for k, v in stanza}
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            if "debian" not in fields.get("uris", ""):
                continue
            lines = ["Types: deb-src"]
            for key, value in stanza:
                if key.lower() not in ("types", "enabled", "architectures"):
                    lines.append(f"{key}: {value}")
            out.append("\n".join(lines))
    lists = [etc_apt / "sources.list"] + (sorted(d.glob("*.list")) if d.is_dir() else [])
    for f in lists:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            m = re.match(r"^\s*deb\s+(\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if not m or "debian" not in m.group(3):
                continue
            opts = dict(
                o.split("=", 1) for o in (m.group(2) or "").split() if "=" in o
            )
            lines = ["Types: deb-src", f"URIs: {m.group(3)}", f"Suites: {m.group(4)}"]
            if m.group(5).strip():
                lines.append(f"Components: {m.group(5).strip()}")
            if "signed-by" in opts:
                lines.append(f"Signed-By: {opts['signed-by']}")
            out.append("\n".join(lines))
    if not out:
        return FALLBACK_DEB_SRC
    return "\n\n".join(out) + "\n"


def debian_downloads() -> Path:
    path = cache.subdir("downloads") / "debian"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _quarantine(path: Path, actual: str) -> Path:
    bad = path.with_name(f"{path.name}.bad-{actual[:12]}")
    os.replace(path, bad)
    return bad


def fetch_sources(recipe: Recipe) -> dict[str, Path]:
    """Every pinned source file of the recipe, verified, in ``downloads/debian/``.

    Files already there with the right sha256 are used as they are (so a
    machine without network access works once they were placed there).  A
    file whose sha256 differs from the pin is moved aside (``NAME.bad-SHA``)
    and the build stops naming the file, the expected and the actual sum.
    """
    dl = debian_downloads()
    wanted = {f.name: f.sha256 for p in recipe.packages.values() for f in p.files}
    with cache.lock("debian-sources"):
        need: list[Package] = []
        for pkg in recipe.packages.values():
            ok = True
            for f in pkg.files:
                p = dl / f.name
                if p.is_file():
                    actual = cache.file_sha256(p)
                    if actual == f.sha256:
                        continue
                    _quarantine(p, actual)  # corrupted or replaced: fetch again
                ok = False
            if not ok:
                need.append(pkg)
        if need:
            with progress.step(f"download Debian sources ({', '.join(p.name for p in need)})"):
                _apt_get_source(need, dl)
        for name, expected in wanted.items():
            p = dl / name
            if not p.is_file():
                raise StageError(
                    f"Debian source file {name} was not downloaded; place it in {dl} by hand"
                )
            actual = cache.file_sha256(p)
            if actual != expected:
                bad = _quarantine(p, actual)
                raise StageError(
                    f"Debian source file {name}: sha256 mismatch: expected {expected}, "
                    f"got {actual} (moved aside to {bad.name})"
                )
    return {name: dl / name for name in wanted}


def _apt_get_source(packages: Sequence[Package], dl: Path) -> None:
    if proc.which("apt-get") is None:
        missing = ", ".join(f.name for p in packages for f in p.files)
        raise StageError(f"apt-get not found: download {missing} and place them in {dl}")
    apt = dl / ".apt"
    parts = apt / "sources.list.d"
    for sub in (parts, apt / "lists" / "partial", apt / "cache" / "archives" / "partial"):
        sub.mkdir(parents=True, exist_ok=True)
    (apt / "empty.list").write_text("")
    (parts / "harness-deb-src.sources").write_text(deb_src_twin())
    opts = [
        "-q",
        "-o", f"Dir::Etc::SourceList={apt / 'empty.list'}",
        "-o", f"Dir::Etc::SourceParts={parts}",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
    ]
    update = proc.run(["apt-get", *opts, "update"], check=False, timeout=900,
                      what="apt-get update (deb-src)")
    with tempfile.TemporaryDirectory(dir=dl, prefix=".fetch-") as tmp:
        specs = [f"{p.source}={p.version}" for p in packages]
        result = proc.run(["apt-get", *opts, "source", "--download-only", *specs],
                          cwd=Path(tmp), check=False, timeout=1800)
        if not result.ok:
            tail = "\n".join((result.stderr + update.stderr).strip().splitlines()[-6:])
            raise StageError(
                f"apt-get source {' '.join(specs)} failed (exit {result.returncode}); "
                f"the pinned versions may have left the archive: place the files in {dl} "
                f"by hand or update the recipe pins\n{tail}"
            )
        for pkg in packages:
            for f in pkg.files:
                src = Path(tmp) / f.name
                if src.is_file():
                    os.replace(src, dl / f.name)


# =====================================================================================
# Guest binaries (cached in userland/<name>-<key>/)


@dataclass(frozen=True)
class Userland:
    """Compiled guest binaries: image path -> file in the cache."""

    directory: Path
    binaries: dict[str, Path]
    links: tuple[str, ...] = ()  # busybox applet paths (absolute guest paths)
    cached: bool = False


def _run_logged(argv: Sequence[str], log: Path, *, cwd: Path, what: str,
                input: str | None = None) -> None:
    """Run a build command with its output appended to ``log``."""
    with log.open("a") as f:
        result = proc.run(argv, cwd=cwd, log_to=f, check=False, input=input, env=MAKE_ENV)
    if not result.ok:
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-12:])
        raise StageError(f"{what} failed (exit {result.returncode})\n{tail}")


def _userland_entry(name: str, key: str, build: Any, jobs: int) -> Userland:
    final = cache.subdir("userland") / f"{name}-{key}"
    with cache.lock(f"userland-{name}-{key}"):
        manifest = final / "userland.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            return Userland(final, {k: final / v for k, v in data["binaries"].items()},
                            tuple(data.get("links", ())), cached=True)
        start = time.monotonic()
        failed_log = final.with_name(final.name + ".failed.log")
        with cache.staged_dir(final) as stage:
            try:
                binaries, links = build(stage, jobs)
            except StageError as exc:
                # The stage is about to be removed: keep its log for the user.
                if (stage / "build.log").is_file():
                    shutil.copyfile(stage / "build.log", failed_log)
                    raise StageError(f"{exc}\nfull log: {failed_log}") from None
                raise
            failed_log.unlink(missing_ok=True)
            for path in binaries.values():
                _check_static_i386(stage / path)
            (stage / "userland.json").write_text(json.dumps({
                "name": name, "key": key, "binaries": binaries, "links": links,
                "seconds": round(time.monotonic() - start, 1),
            }, indent=2) + "\n")
        return Userland(final, {k: final / v for k, v in binaries.items()}, tuple(links))


def _extract_orig(tarball: Path, work: Path) -> Path:
    archive.safe_extract_tar(tarball, work / "src")
    tops = list((work / "src").iterdir())
    if len(tops) != 1 or not tops[0].is_dir():
        raise StageError(f"{tarball.name}: expected one top-level directory")
    return tops[0]


def build_busybox(pkg: Package, tarball: Path, tc: GuestToolchain, jobs: int) -> Userland:
    key = cache.digest(USERLAND_FORMAT, pkg.orig.sha256, pkg.config or b"", tc.id)

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        log = stage / "build.log"
        work = stage / "work"
        src = _extract_orig(tarball, work)
        khdr = work / "kernel-headers"
        khdr.mkdir()
        for name, target in KERNEL_HEADER_LINKS.items():
            if not target.is_dir():
                raise StageError(f"{target} missing: sudo apt-get install linux-libc-dev")
            (khdr / name).symlink_to(target)
        with progress.step(f"busybox {pkg.version}: configure and build") as s:
            s.update("make defconfig")
            _run_logged(["make", "defconfig"], log, cwd=src, what="busybox make defconfig")
            wanted = config.parse_fragment((pkg.config or b"").decode(), "busybox config fragment")
            (src / ".config").write_text(config.merge((src / ".config").read_text(), wanted))
            _run_logged(["make", "oldconfig"], log, cwd=src, input=OLDCONFIG_ANSWERS,
                        what="busybox make oldconfig")
            final_config = (src / ".config").read_text()
            missing = config.lost_symbols(wanted, final_config)
            if missing:
                raise StageError(f"busybox config: lost after oldconfig: {', '.join(missing)}")
            s.update("make busybox")
            _run_logged(
                ["make", f"-j{jobs}", f"CC={' '.join(tc.cc)}", f"EXTRA_CFLAGS=-isystem {khdr}",
                 "busybox", "busybox.links"],
                log, cwd=src, what="busybox build",
            )
            _run_logged([tc.strip, "-o", str(stage / "busybox"), "busybox"], log, cwd=src,
                        what="strip busybox")
        (stage / "busybox.config").write_text(final_config)
        links = [
            line.strip() for line in (src / "busybox.links").read_text().splitlines()
            if line.strip().startswith("/")
        ]
        cache.remove_tree(work)
        return {"/bin/busybox": "busybox"}, links

    return _userland_entry("busybox", key, build, jobs)


def build_dropbear(pkg: Package, tarball: Path, tc: GuestToolchain, jobs: int) -> Userland:
    key = cache.digest(USERLAND_FORMAT, pkg.orig.sha256, pkg.options or b"", tc.id,
                       " ".join(DROPBEAR_CONFIGURE), " ".join(DROPBEAR_PROGRAMS))

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        log = stage / "build.log"
        work = stage / "work"
        src = _extract_orig(tarball, work)
        (src / "localoptions.h").write_bytes(pkg.options or b"")
        with progress.step(f"dropbear {pkg.version}: configure and build") as s:
            s.update("configure")
            _run_logged(
                ["./configure", "--host=i686-linux-gnu", f"CC={' '.join(tc.cc)}",
                 *DROPBEAR_CONFIGURE],
                log, cwd=src, what="dropbear configure",
            )
            s.update("make")
            _run_logged(
                ["make", f"-j{jobs}", f"PROGRAMS={' '.join(DROPBEAR_PROGRAMS)}", "STATIC=1"],
                log, cwd=src, what="dropbear build",
            )
            for prog in DROPBEAR_PROGRAMS:
                _run_logged([tc.strip, "-o", str(stage / prog), prog], log, cwd=src,
                            what=f"strip {prog}")
        cache.remove_tree(work)
        return {"/usr/sbin/dropbear": "dropbear", "/usr/bin/dropbearkey": "dropbearkey"}, []

    return _userland_entry("dropbear", key, build, jobs)


def build_program(program: Program, tc: GuestToolchain) -> Userland:
    key = cache.digest(USERLAND_FORMAT, program.source, " ".join(program.cflags), tc.id,
                       " ".join(PROGRAM_CFLAGS))

    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        src = stage / f"{program.name}.c"
        src.write_bytes(program.source)
        log = stage / "build.log"
        _run_logged(
            [*tc.cc, "-static", *PROGRAM_CFLAGS, *program.cflags, "-o", program.name, src.name],
            log, cwd=stage, what=f"compile {program.name} ({program.source_path})",
        )
        _run_logged([tc.strip, program.name], log, cwd=stage, what=f"strip {program.name}")
        return {program.install: program.name}, []

    return _userland_entry(program.name, key, build, 1)


# =====================================================================================
# Keys


def _ssh_string(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", data, pos)
    end = pos + 4 + n
    if end > len(data):
        raise StageError("truncated OpenSSH key")
    return data[pos + 4 : end], end


def _pack(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def read_openssh_ed25519(path: Path) -> tuple[bytes, bytes]:
    """(seed, public key), 32 bytes each, from an unencrypted OpenSSH private key."""
    lines = path.read_text().strip().splitlines()
    if not lines or lines[0] != "-----BEGIN OPENSSH PRIVATE KEY-----":
        raise StageError(f"{path}: not an OpenSSH private key")
    blob = base64.b64decode("".join(lines[1:-1]))
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise StageError(f"{path}: not an openssh-key-v1 key")
    pos = len(magic)
    cipher, pos = _ssh_string(blob, pos)
    _kdf, pos = _ssh_string(blob, pos)
    _kdfopts, pos = _ssh_string(blob, pos)
    (count,) = struct.unpack_from(">I", blob, pos)
    pos += 4
    if cipher != b"none" or count != 1:
        raise StageError(f"{path}: encrypted or multi-key files are not supported")
    _pub, pos = _ssh_string(blob, pos)
    priv, _ = _ssh_string(blob, pos)
    check1, check2 = struct.unpack_from(">II", priv, 0)
    if check1 != check2:
        raise StageError(f"{path}: corrupt private key (check bytes differ)")
    p = 8
    ktype, p = _ssh_string(priv, p)
    pub, p = _ssh_string(priv, p)
    secret, p = _ssh_string(priv, p)
    if ktype != b"ssh-ed25519" or len(pub) != 32 or len(secret) != 64 or secret[32:] != pub:
        raise StageError(f"{path}: not a valid ed25519 key")
    return secret[:32], pub


def dropbear_ed25519_key(seed: bytes, pub: bytes) -> bytes:
    """A host key in dropbear's own format (as ``dropbearkey -t ed25519`` writes it)."""
    return _pack(b"ssh-ed25519", seed + pub)


def ed25519_public_line(pub: bytes, comment: str = "") -> str:
    line = "ssh-ed25519 " + base64.b64encode(_pack(b"ssh-ed25519", pub)).decode()
    return f"{line} {comment}".rstrip()


def fingerprint(pub: bytes) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of an ed25519 public key."""
    digest = hashlib.sha256(_pack(b"ssh-ed25519", pub)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def generate_ed25519(path: Path, comment: str) -> tuple[bytes, bytes]:
    """Write an ed25519 key pair (``path`` 0600, ``path.pub``) with ssh-keygen."""
    if proc.which("ssh-keygen") is None:
        raise StageError("ssh-keygen not found: sudo apt-get install openssh-client")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
             what="ssh-keygen")
    path.chmod(0o600)
    return read_openssh_ed25519(path)


# =====================================================================================
# Assembly


@dataclass(frozen=True)
class Image:
    recipe_name: str
    recipe_hash: str
    directory: Path
    initramfs: Path
    client_keys: dict[str, Path]  # user name -> OpenSSH private key (0600)
    host_key_fingerprint: str  # "SHA256:..."
    host_public_key: str  # "ssh-ed25519 AAAA..."
    users: dict[str, int] = field(default_factory=dict)  # user name -> uid
    ssh_port: int = 22  # in the guest
    cached: bool = False

    def client_key(self, user: str) -> Path:
        try:
            return self.client_keys[user]
        except KeyError:
            raise InputError(
                f"image {self.recipe_name} has no user {user!r} "
                f"(users: {', '.join(self.client_keys)})"
            ) from None

    @staticmethod
    def load(directory: Path) -> Image | None:
        """The image in ``directory`` if it is complete, else None."""
        manifest = directory / "image.json"
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return None
        image = Image(
            recipe_name=data["recipe_name"],
            recipe_hash=data["recipe_hash"],
            directory=directory,
            initramfs=directory / data["initramfs"],
            client_keys={u: directory / p for u, p in data["client_keys"].items()},
            host_key_fingerprint=data["host_key_fingerprint"],
            host_public_key=data["host_public_key"],
            users=dict(data["users"]),
            ssh_port=data["ssh_port"],
            cached=True,
        )
        paths = [image.initramfs, *image.client_keys.values()]
        return image if all(p.is_file() for p in paths) else None


def image_dir(recipe: Recipe) -> Path:
    return cache.subdir("images") / recipe.recipe_hash


def _etc_files(recipe: Recipe, host_key: bytes) -> list[CpioMember]:
    passwd = "".join(
        f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{u.shell}\n" for u in recipe.users
    )
    # "!" locks every password: logins are by key only.
    shadow = "".join(f"{u.name}:!:1:0:99999:7:::\n" for u in recipe.users)
    group = "".join(f"{g.name}:x:{g.gid}:{','.join(g.members)}\n" for g in recipe.groups)
    shells = "".join(sorted({"/bin/sh\n", "/bin/ash\n"} | {u.shell + "\n" for u in recipe.users}))
    return [
        CpioMember("etc/passwd", data=passwd.encode(), mode=0o644),
        CpioMember("etc/shadow", data=shadow.encode(), mode=0o600),
        CpioMember("etc/group", data=group.encode(), mode=0o644),
        CpioMember("etc/shells", data=shells.encode(), mode=0o644),
        CpioMember("etc/hostname", data=f"{recipe.hostname}\n".encode(), mode=0o644),
        archive.directory("etc/dropbear", 0o700),
        CpioMember(HOST_KEY_PATH.lstrip("/"), data=host_key, mode=0o600),
    ]


def image_members(
    recipe: Recipe,
    *,
    init: str,
    binaries: Mapping[str, Path],
    busybox_links: Sequence[str],
    host_key: bytes,
    authorized_keys: Mapping[str, str],
) -> list[CpioMember]:
    """Every member of the initramfs (validated by :func:`archive.check_members`)."""
    members: list[CpioMember] = [
        archive.directory(d)
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys",
                  "var", "var/log", "var/run", "mnt", "home")
    ]
    members += [
        archive.directory("tmp", 0o1777),
        archive.chardev("dev/console", 5, 1, 0o600),  # the kernel opens it before /init
        CpioMember("init", data=init.encode(), mode=0o755),
    ]
    for guest_path, host_path in binaries.items():
        members.append(CpioMember(guest_path.lstrip("/"), data=host_path, mode=0o755))
    taken = {m.path for m in members} | {p.lstrip("/") for p in binaries}
    taken |= {f.path.lstrip("/") for f in recipe.files}
    for link in busybox_links:
        rel = archive.normalize_member(link.lstrip("/"), what="busybox applet")
        if rel not in taken and rel != "linuxrc":
            members.append(archive.symlink(rel, "/bin/busybox"))
            taken.add(rel)
    members += _etc_files(recipe, host_key)
    for u in recipe.users:
        home = u.home.lstrip("/")
        keys = [authorized_keys[u.name], *u.authorized_keys]
        members += [
            archive.directory(home, 0o700, u.uid, u.gid),
            archive.directory(f"{home}/.ssh", 0o700, u.uid, u.gid),
            CpioMember(f"{home}/.ssh/authorized_keys", data=("\n".join(keys) + "\n").encode(),
                       mode=0o600, uid=u.uid, gid=u.gid),
        ]
    for f in recipe.files:
        members.append(CpioMember(f.path.lstrip("/"), data=f.content, mode=f.mode,
                                  uid=f.uid, gid=f.gid))
    return archive.check_members(members)


def _contents(members: Sequence[CpioMember]) -> str:
    lines = []
    for m in members:
        extra = f" -> {m.payload().decode()}" if m.kind == "symlink" else ""
        if m.kind == "chardev":
            extra = f" {m.rdev[0]},{m.rdev[1]}"
        lines.append(f"{m.kind:8} {m.mode:04o} {m.uid:5}:{m.gid:<5} /{m.path}{extra}")
    return "\n".join(lines) + "\n"


def build_image(recipe: Recipe, *, jobs: int | None = None, force: bool = False) -> Image:
    """Build (or find in the cache) the image of ``recipe``."""
    jobs = jobs or os.cpu_count() or 1
    final = image_dir(recipe)
    with cache.lock(f"image-{recipe.recipe_hash}"):
        if not force:
            cached = Image.load(final)
            if cached is not None:
                return cached
        init = render_init(recipe)  # template errors before any long step
        tc = guest_toolchain()
        sources = fetch_sources(recipe)
        bb_pkg, db_pkg = recipe.packages["busybox"], recipe.packages["dropbear"]
        busybox = build_busybox(bb_pkg, sources[bb_pkg.orig.name], tc, jobs)
        dropbear = build_dropbear(db_pkg, sources[db_pkg.orig.name], tc, jobs)
        programs = [build_program(p, tc) for p in recipe.programs]
        binaries: dict[str, Path] = {}
        for part in (busybox, dropbear, *programs):
            binaries.update(part.binaries)

        with progress.step(f"assemble image {recipe.name} ({recipe.recipe_hash})"), \
                cache.staged_dir(final) as stage:
            keys = stage / "keys"
            seed, host_pub = generate_ed25519(keys / "host_ed25519",
                                              f"harness-host-{recipe.recipe_hash}")
            client_keys: dict[str, str] = {}
            authorized: dict[str, str] = {}
            for u in recipe.users:
                rel = f"keys/{u.name}_ed25519"
                _, pub = generate_ed25519(stage / rel, f"harness-{u.name}-{recipe.recipe_hash}")
                client_keys[u.name] = rel
                authorized[u.name] = ed25519_public_line(pub, f"harness-{u.name}")
            members = image_members(
                recipe,
                init=init,
                binaries=binaries,
                busybox_links=busybox.links,
                host_key=dropbear_ed25519_key(seed, host_pub),
                authorized_keys=authorized,
            )
            archive.write_cpio(members, stage / "initramfs.cpio.gz")
            (stage / "init").write_text(init)
            (stage / "contents.txt").write_text(_contents(members))
            manifest = {
                "recipe_name": recipe.name,
                "recipe_hash": recipe.recipe_hash,
                "recipe": str(recipe.path),
                "initramfs": "initramfs.cpio.gz",
                "client_keys": client_keys,
                "host_key_fingerprint": fingerprint(host_pub),
                "host_public_key": ed25519_public_line(host_pub),
                "users": {u.name: u.uid for u in recipe.users},
                "ssh_port": recipe.network.ssh_port,
                "milestones": list(BOOT_MILESTONES),
                "userland": {
                    "busybox": busybox.directory.name,
                    "dropbear": dropbear.directory.name,
                    **{p.directory.name.rsplit("-", 1)[0]: p.directory.name for p in programs},
                },
                "canonical_recipe": recipe.canonical(),
            }
            (stage / "image.json").write_text(json.dumps(manifest, indent=2) + "\n")
    image = Image.load(final)
    if image is None:  # pragma: no cover - staged_dir guarantees the files
        raise StageError(f"image {final} is incomplete after building")
    return dataclasses.replace(image, cached=False)
