"""Archives: a newc cpio writer/reader and a safe tar extractor.

Both refuse anything that could land outside the directory (or image root)
they are meant for, with an :class:`~harness.errors.InputError` naming the
offending member:

* :func:`write_cpio` builds an initramfs from an in-memory member list, so
  ownership and modes come from the caller, not from the file system, and no
  root privileges are needed.  Member paths are image-root relative; ``..``
  components, absolute paths, duplicates and paths that pass through a
  symlink member are refused.
* :func:`safe_extract_tar` unpacks ``.tar``, ``.tar.gz``, ``.tar.bz2`` and
  ``.tar.xz`` files into an empty directory, refusing absolute names, ``..``,
  links whose target resolves outside the destination, paths through links,
  and device, FIFO or other special members.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.errors import InputError

Kind = Literal["file", "dir", "symlink", "chardev", "blockdev", "fifo"]

_KIND_BITS: dict[str, int] = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chardev": stat.S_IFCHR,
    "blockdev": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}
_BITS_KIND = {v: k for k, v in _KIND_BITS.items()}

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


# --------------------------------------------------------------------------
# Path checks shared by both formats


def normalize_member(name: str, *, what: str = "archive member") -> str:
    """Return ``name`` as a clean relative path, or raise :class:`InputError`.

    Refused: empty names, NUL bytes, absolute paths and any ``..`` component
    (even one that would normalise away: ``a/../b`` may cross a symlink).
    A leading ``./`` and repeated or trailing slashes are accepted and removed.
    """
    if not name or "\0" in name:
        raise InputError(f"{what} {name!r}: empty name or NUL byte")
    if name.startswith("/"):
        raise InputError(f"{what} {name!r}: absolute path escapes the root")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{what} {name!r}: '..' component escapes the root")
    if not parts:
        raise InputError(f"{what} {name!r}: names the root itself")
    return "/".join(parts)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_inside(path: str, links: dict[str, str], depth: int = 0) -> str | None:
    """Resolve ``path`` (relative to the root) through ``links`` lexically.

    ``links`` maps member paths to symlink targets.  Returns the resolved
    relative path ("" for the root), or None when it leaves the root (or
    loops).  Absolute targets resolve against the root.
    """
    if depth > 40:
        return None
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        here = "/".join(out)
        if here in links:
            target = links[here]
            base = "" if target.startswith("/") else "/".join(out[:-1])
            resolved = _resolve_inside(posixpath.join(base, target.lstrip("/")), links, depth + 1)
            if resolved is None:
                return None
            out = resolved.split("/") if resolved else []
    return "/".join(out)


# --------------------------------------------------------------------------
# cpio (newc)


@dataclass(frozen=True)
class CpioMember:
    """One initramfs member.  ``path`` is relative to the image root."""

    path: str
    kind: Kind = "file"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes | Path = b""  # file contents (or a file to read them from); symlink target
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes
    mtime: int = 0

    def payload(self) -> bytes:
        if self.kind == "symlink":
            target = self.data if isinstance(self.data, bytes) else str(self.data).encode()
            return target
        if self.kind != "file":
            return b""
        if isinstance(self.data, Path):
            return self.data.read_bytes()
        return self.data


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> CpioMember:
    return CpioMember(path, "dir", mode, uid, gid)


def symlink(path: str, target: str) -> CpioMember:
    return CpioMember(path, "symlink", 0o777, data=target.encode())


def chardev(path: str, major: int, minor: int, mode: int = 0o600) -> CpioMember:
    return CpioMember(path, "chardev", mode, rdev=(major, minor))


def check_members(members: Iterable[CpioMember]) -> list[CpioMember]:
    """Validate and complete a member list for :func:`write_cpio`.

    Paths are normalised, duplicates and paths through symlink members are
    refused, and missing parent directories are added (0755, root).  The
    result is ordered so that every directory precedes its contents.
    """
    by_path: dict[str, CpioMember] = {}
    for m in members:
        if m.kind not in _KIND_BITS:
            raise InputError(f"image member {m.path!r}: unknown kind {m.kind!r}")
        if m.mode & ~0o7777:
            raise InputError(f"image member {m.path!r}: mode {m.mode:o} has non-permission bits")
        path = normalize_member(m.path, what="image member")
        if path in by_path:
            raise InputError(f"image member {path!r}: given twice")
        if m.kind == "symlink":
            target = m.payload().decode(errors="replace")
            if not target or "\0" in target:
                raise InputError(f"image member {path!r}: empty symlink target")
        by_path[path] = m if path == m.path else CpioMember(
            path, m.kind, m.mode, m.uid, m.gid, m.data, m.rdev, m.mtime
        )
    links = {p: m.payload().decode() for p, m in by_path.items() if m.kind == "symlink"}
    for path in list(by_path):
        for parent in _parents(path):
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = directory(parent)
            elif existing.kind == "symlink":
                raise InputError(
                    f"image member {path!r}: passes through symlink {parent!r}"
                    f" -> {links[parent]!r}"
                )
            elif existing.kind != "dir":
                raise InputError(f"image member {path!r}: parent {parent!r} is not a directory")
    return [by_path[p] for p in sorted(by_path, key=lambda p: (p.count("/"), p))]


def _newc_header(ino: int, m: CpioMember, name: bytes, size: int) -> bytes:
    fields = (
        ino,
        _KIND_BITS[m.kind] | m.mode,
        m.uid,
        m.gid,
        2 if m.kind == "dir" else 1,
        m.mtime,
        size,
        0,
        0,
        m.rdev[0],
        m.rdev[1],
        len(name) + 1,
        0,
    )
    for value in fields:
        if not 0 <= value <= 0xFFFFFFFF:
            raise InputError(f"image member {m.path!r}: header field {value} out of range")
    return NEWC_MAGIC + b"".join(b"%08X" % v for v in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def cpio_bytes(members: Iterable[CpioMember]) -> bytes:
    """The uncompressed newc archive of ``members`` (validated first)."""
    out = io.BytesIO()
    for ino, m in enumerate(check_members(members), start=1):
        name = m.path.encode()
        data = m.payload()
        header = _newc_header(ino, m, name, len(data))
        out.write(header + name + b"\0")
        out.write(_pad(len(header) + len(name) + 1))
        out.write(data)
        out.write(_pad(len(data)))
    name = TRAILER.encode()
    fields = [0] * 13
    fields[4], fields[11] = 1, len(name) + 1
    header = NEWC_MAGIC + b"".join(b"%08X" % v for v in fields)
    out.write(header + name + b"\0" + _pad(len(header) + len(name) + 1))
    # Pad to a 512-byte block like cpio(1) does; the kernel skips zero padding.
    out.write(b"\0" * (-out.tell() % 512))
    return out.getvalue()


def write_cpio(members: Iterable[CpioMember], dest: Path, *, compress: bool = True) -> Path:
    """Write ``members`` as a (gzip'd, reproducible) newc archive to ``dest``."""
    raw = cpio_bytes(members)
    tmp = dest.with_name(dest.name + ".part")
    if compress:
        with tmp.open("wb") as f, gzip.GzipFile(
            filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9
        ) as gz:
            gz.write(raw)
    else:
        tmp.write_bytes(raw)
    os.replace(tmp, dest)
    return dest


@dataclass(frozen=True)
class CpioEntry:
    """A member as read back by :func:`read_cpio`."""

    path: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    data: bytes
    rdev: tuple[int, int]


def read_cpio(blob: bytes) -> list[CpioEntry]:
    """Parse a (possibly gzip'd) newc archive; the trailer is not returned."""
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if blob[pos : pos + 6] != NEWC_MAGIC:
            raise InputError(f"cpio: bad magic at offset {pos}")
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size = fields[1], fields[2], fields[3], fields[6]
        namesize = fields[11]
        pos += 110
        name = blob[pos : pos + namesize - 1].decode()
        pos += namesize
        pos += -pos % 4
        data = blob[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == TRAILER:
            return entries
        kind: Kind | None = _BITS_KIND.get(stat.S_IFMT(mode))  # type: ignore[assignment]
        if kind is None:
            raise InputError(f"cpio: member {name!r} has unsupported type {mode:o}")
        entries.append(
            CpioEntry(name, kind, stat.S_IMODE(mode), uid, gid, data, (fields[9], fields[10]))
        )


# --------------------------------------------------------------------------
# tar


def _check_tar_members(tarball: Path, members: Sequence[tarfile.TarInfo]) -> None:
    seen: dict[str, tarfile.TarInfo] = {}
    links: dict[str, str] = {}
    what = f"{tarball.name}: member"
    for ti in members:
        name = normalize_member(ti.name, what=what)
        if name in seen and not (ti.isdir() and seen[name].isdir()):
            raise InputError(f"{what} {ti.name!r}: appears twice")
        for parent in _parents(name):
            if parent in links or (parent in seen and not seen[parent].isdir()):
                raise InputError(f"{what} {ti.name!r}: passes through link {parent!r}")
        if ti.issym():
            if not ti.linkname or ti.linkname.startswith("/"):
                raise InputError(
                    f"{what} {ti.name!r}: symlink to absolute path {ti.linkname!r} refused"
                )
            links[name] = ti.linkname
        elif ti.islnk():
            target = normalize_member(ti.linkname, what=f"{what} {ti.name!r}: hard link target")
            if target not in seen or not seen[target].isfile():
                raise InputError(
                    f"{what} {ti.name!r}: hard link to {ti.linkname!r},"
                    " which is not an earlier regular file"
                )
        elif not (ti.isfile() or ti.isdir()):
            kind = "device" if (ti.ischr() or ti.isblk()) else "FIFO" if ti.isfifo() else "special"
            raise InputError(f"{what} {ti.name!r}: {kind} file refused")
        seen[name] = ti
    # Symlink targets are checked once every link is known: a target may run
    # through links that come later in the archive.
    for name, target in links.items():
        base = posixpath.dirname(name)
        if _resolve_inside(posixpath.join(base, target), links) is None:
            raise InputError(f"{what} {name!r}: symlink {target!r} points outside the archive")


def safe_extract_tar(tarball: Path, dest: Path) -> list[str]:
    """Extract ``tarball`` into ``dest`` (created; must be empty) safely.

    Every member is checked before anything is written (see the module
    docstring); a refused archive leaves ``dest`` empty.  File owners are not
    restored and set-id bits are dropped.  Returns the top-level names.
    """
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"{dest}: extraction target is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tf = tarfile.open(tarball, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{tarball}: not a readable tar archive ({exc})") from exc
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"{tarball}: corrupt tar archive ({exc})") from exc
        _check_tar_members(tarball, members)
        for ti in members:
            # No set-id or sticky bits; the owner can always write what it unpacked.
            ti.mode = (ti.mode & 0o777) | (0o700 if ti.isdir() else 0o600)
        kwargs: dict[str, object] = {}
        if hasattr(tarfile, "data_filter"):
            kwargs["filter"] = "data"  # a second line of defence; also drops owners
        else:  # Python < 3.11.4: never chown to the archive's owners
            for ti in members:
                ti.uid, ti.gid, ti.uname, ti.gname = os.getuid(), os.getgid(), "", ""
        try:
            tf.extractall(dest, members=members, **kwargs)  # type: ignore[arg-type]
        except tarfile.FilterError as exc:
            raise InputError(f"{tarball}: refused by tar filter: {exc}") from exc
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"{tarball}: extraction failed ({exc})") from exc
    return sorted({normalize_member(m.name).split("/")[0] for m in members})
