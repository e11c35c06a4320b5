"""The initramfs archive: a newc cpio writer and reader over in-memory members."""

from __future__ import annotations

import gzip
import io
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness import cache
from harness.archive import normalize_member, parent_paths
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
        for parent in parent_paths(path):
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
    with cache.atomic_file(dest, "wb") as f:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
                gz.write(raw)
        else:
            f.write(raw)
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
