"""scripts/debian-chroot's pure parts: command line, kernel-source plan, apt sources, mountinfo, results."""

# Only the standard library, like the script: it runs before any virtual environment exists.

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROG = "debian-chroot"
DESCRIPTION = ("Run the README's commands on the current working tree inside a Debian chroot "
               "of a chosen release.")
DEFAULT_SUITE = "bookworm"
DEFAULT_TARGETS = ("test-kernel", "test")
DEFAULT_CHROOTS = "/var/tmp/harness-chroots"
ROLLING = frozenset({"sid", "unstable", "experimental"})
KSRC_INSIDE = "/mnt/kernel-src"
_SUITE_RE = re.compile(r"[a-z][a-z0-9-]{1,30}")
_TARGET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_PYTEST_RE = re.compile(r"^=+ (.*\b(?:passed|failed|errors?|skipped|xfailed|xpassed|no tests ran)\b.*?) =+$")
_HARNESS_RE = re.compile(r"^harness: (\d+ tests?\b.*)$")
_ERROR_RE = re.compile(r"\berror:\s|^[A-Za-z_.]*(?:Error|Exception): ")


class Failure(Exception):
    """A one-line reason to stop; the process exits 2 with it."""


@dataclass(frozen=True)
class KernelSrc:
    """A host kernel source made visible, read-only, inside the chroot."""

    host: Path
    inside: str  # where it is mounted in the chroot
    value: str  # HARNESS_KERNEL_SRC inside the chroot
    is_dir: bool


@dataclass(frozen=True)
class Options:
    suite: str
    chroots: Path
    targets: tuple[str, ...]
    fresh: bool = False
    cold: bool = False
    keep_mounts: bool = False
    umount_only: bool = False
    shell: bool = False
    committed: bool = False
    kernel_src: str | None = None
    mirror: str | None = None

    @property
    def root(self) -> Path:
        return self.chroots / self.suite


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    """Validate the command line; raise :class:`Failure` naming the bad input."""
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument("--suite", default=DEFAULT_SUITE, help="Debian release: bookworm, trixie, ...")
    p.add_argument("--chroots", default=env.get("HARNESS_CHROOTS") or DEFAULT_CHROOTS,
                   help="where chroots live, one folder per suite ($HARNESS_CHROOTS, default %(default)s)")
    p.add_argument("--fresh", action="store_true", help="remake the chroot with debootstrap")
    p.add_argument("--cold", action="store_true", help="empty the chroot's harness cache first")
    p.add_argument("--keep-mounts", action="store_true",
                   help="leave /proc, /sys, /dev... mounted in the chroot afterwards (debugging)")
    p.add_argument("--umount", action="store_true", help="only unmount what --keep-mounts left")
    p.add_argument("--shell", action="store_true", help="open a root shell in the chroot instead")
    p.add_argument("--committed", action="store_true",
                   help="copy HEAD only, leaving out uncommitted changes and untracked files")
    p.add_argument("--kernel-src", default=env.get("HARNESS_KERNEL_SRC") or None,
                   help="2.6.20 directory, tarball or git PATH@REF mounted read-only into the chroot "
                        "as its HARNESS_KERNEL_SRC (default $HARNESS_KERNEL_SRC; without one the harness "
                        "downloads linux-2.6.20.tar.bz2)")
    p.add_argument("--mirror", help="Debian mirror URI (default: the one in /etc/apt)")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help=f"make targets to run in order (default: {' '.join(DEFAULT_TARGETS)})")
    try:
        ns = p.parse_args(list(argv))
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        raise Failure("bad command line (see the usage above)") from None
    if not _SUITE_RE.fullmatch(ns.suite):
        raise Failure(f"--suite {ns.suite!r}: expected a Debian release name such as bookworm or trixie")
    for t in ns.targets:
        if not _TARGET_RE.fullmatch(t):
            raise Failure(f"target {t!r}: expected a make target name (letters, digits, '_', '.', '-')")
    if ns.mirror is not None and not re.fullmatch(r"(https?|file)://\S+", ns.mirror):
        raise Failure(f"--mirror {ns.mirror!r}: expected an http(s):// or file:// URI")
    chroots = Path(ns.chroots)
    if not chroots.is_absolute():
        raise Failure(f"--chroots {ns.chroots!r}: expected an absolute path")
    if ns.umount and (ns.shell or ns.fresh or ns.targets):
        raise Failure("--umount only unmounts: give it no targets, --shell or --fresh")
    if ns.shell and ns.targets:
        raise Failure("--shell opens a shell instead of running targets: give one or the other")
    return Options(suite=ns.suite, chroots=chroots, targets=tuple(ns.targets) or DEFAULT_TARGETS,
                   fresh=ns.fresh, cold=ns.cold, keep_mounts=ns.keep_mounts, umount_only=ns.umount,
                   shell=ns.shell, committed=ns.committed, kernel_src=ns.kernel_src, mirror=ns.mirror)


def kernel_src_plan(value: str, is_dir: Callable[[Path], bool], is_file: Callable[[Path], bool]) -> KernelSrc:
    """Where a host kernel source appears inside the chroot, and the HARNESS_KERNEL_SRC to give."""
    ref = None
    path = Path(value)
    if not is_dir(path) and not is_file(path) and "@" in value:
        head, _, ref = value.rpartition("@")
        path = Path(head)
    if not path.is_absolute():
        raise Failure(f"kernel source {value!r}: expected an absolute path")
    if ref is not None:
        if not is_dir(path) or not ref or not re.fullmatch(r"[A-Za-z0-9][\w./^~-]*", ref):
            raise Failure(f"kernel source {value!r}: expected a git repository as PATH@REF")
        inside = KSRC_INSIDE + ".git"
        return KernelSrc(path, inside, f"{inside}@{ref}", True)
    if is_dir(path):
        return KernelSrc(path, KSRC_INSIDE, KSRC_INSIDE, True)
    if is_file(path):
        inside = f"/mnt/{path.name}"
        return KernelSrc(path, inside, inside, False)
    raise Failure(f"kernel source {value!r}: no such directory or file")


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t" and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, val = line.partition(":")
            key = key.strip().lower()
            fields[key] = val.strip()
    return


def mirrors_from_apt(sources: str, sources_list: str = "") -> tuple[str | None, str | None]:
    """The Debian archive URI and security URI of a deb822 text (or else a one-line-style list)."""
    main = security = None
    entries: list[tuple[str, list[str]]] = []
    for st in _deb822_stanzas(sources):
        if "deb" not in st.get("types", "").split() or st.get("enabled", "yes").lower() == "no":
            continue
        entries += [(uri, st.get("suites", "").split()) for uri in st.get("uris", "").split()]
    for line in sources_list.splitlines():
        m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m:
            entries.append((m.group(1), [m.group(2)]))
    for uri, suites in entries:
        if suites and all(s.endswith("-security") for s in suites):
            security = security or uri.rstrip("/")
        else:
            main = main or uri.rstrip("/")
    return main, security


def chroot_sources(suite: str, mirror: str, security: str, keyring: str | None) -> str:
    """The chroot's /etc/apt/sources.list.d/debian.sources: the release, its updates and security."""
    signed = f"Signed-By: {keyring}\n" if keyring else ""
    if suite in ROLLING:
        return f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n{signed}"
    return (f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n{signed}\n"
            f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n{signed}")


def unescape_mount(field: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space...) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(mountinfo: str, root: Path) -> list[str]:
    """Mount points at or below ``root`` in a /proc/self/mountinfo text, deepest first."""
    prefix = str(root).rstrip("/")
    found = []
    for line in mountinfo.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        point = unescape_mount(parts[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    # children before parents; at one depth the most recent mount first (mountinfo is in mount order)
    return sorted(reversed(found), key=lambda point: point.count("/"), reverse=True)


def result_counts(output: str) -> str | None:
    """The last test tally in a command's output: the harness summary or pytest's final line."""
    found = None
    for raw in output.splitlines():
        line = _ANSI_RE.sub("", raw.rsplit("\r", 1)[-1]).strip()
        m = _PYTEST_RE.match(line) or _HARNESS_RE.match(line)
        if m:
            found = m.group(1)
    return found


def last_error(output: str) -> str | None:
    """The last line of a command's output that reports an error (``...error: ...``)."""
    found = None
    for raw in output.splitlines():
        line = _ANSI_RE.sub("", raw.rsplit("\r", 1)[-1]).strip()
        if _ERROR_RE.search(line) and not line.startswith("make"):
            found = line
    return found


def summary_failure(summary: Mapping[str, object]) -> str | None:
    """The first failure recorded in a harness results ``summary.json``: build, then boot, then test."""
    for kind, name_key in (("builds", "kernel"), ("boots", "id"), ("tests", "path")):
        records = summary.get(kind)
        for rec in records if isinstance(records, list) else []:
            if isinstance(rec, dict) and rec.get("status") not in ("PASS", "SKIP", None):
                message = str(rec.get("message") or "").strip().splitlines()
                first = message[0] if message else "no message"
                return f"first failure: {kind[:-1]} {rec.get(name_key, '?')} {rec['status']}: {first}"
    return None


def duration(seconds: float) -> str:
    """A wall time for people: ``4.2s`` or ``3m07s``."""
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def result_line(suite: str, target: str, code: int, seconds: float, output: str,
                failure: str | None = None) -> str:
    """One line per command: verdict, exit status, wall time, test counts (and the error if it failed)."""
    verdict = "ok" if code == 0 else "FAILED"
    parts = [f"{PROG}: {suite}: make {target}: {verdict} (exit {code}) in {duration(seconds)}"]
    counts = result_counts(output)
    parts.append(counts or "no test counts")
    if code != 0:
        err = failure or last_error(output)
        if err:
            parts.append(err)
    return "; ".join(parts)
