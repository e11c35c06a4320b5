"""Safe tar extraction, and the member-path checks it shares with the image's cpio writer."""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Sequence
from pathlib import Path

from harness.cache import is_enospc
from harness.errors import InputError

# --------------------------------------------------------------------------
# Path checks (also used by harness.image.cpio)


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


def parent_paths(path: str) -> list[str]:
    """The ancestors of a relative member path, outermost first (``a/b/c``: ``a``, ``a/b``)."""
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
# tar


def _check_tar_members(tarball: Path, members: Sequence[tarfile.TarInfo]) -> None:
    seen: dict[str, tarfile.TarInfo] = {}
    links: dict[str, str] = {}
    what = f"{tarball.name}: member"
    for ti in members:
        name = normalize_member(ti.name, what=what)
        if name in seen and not (ti.isdir() and seen[name].isdir()):
            raise InputError(f"{what} {ti.name!r}: appears twice")
        for parent in parent_paths(name):
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

    ``.tar``, ``.tar.gz``, ``.tar.bz2`` and ``.tar.xz`` are read.  Every member
    is checked before anything is written: absolute names, ``..``, links whose
    target resolves outside ``dest``, paths through links, and device, FIFO or
    other special members are refused with an :class:`InputError` naming the
    member, and a refused archive leaves ``dest`` empty.  File owners are not
    restored and set-id bits are dropped.  Returns the top-level names.

    A damaged archive is one :class:`InputError` line.  A full disk is not the
    archive's fault: that ``OSError`` is raised as it is, for the caller to
    report (``harness.cache.disk_full_guard``) with the path it was filling.
    """
    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"{dest}: extraction target is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tf = tarfile.open(tarball, "r:*")
    except tarfile.ReadError:  # tarfile lists why each method failed, one line each
        raise InputError(f"{tarball}: not a tar archive (tried gzip, bzip2, xz and plain tar); "
                         "expected a .tar.gz, .tar.bz2 or .tar.xz") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{tarball}: not a readable tar archive ({_one_line(exc)})") from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(f"{tarball}: corrupt tar archive ({_one_line(exc)})") from None
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
        # tarfile.FilterError is as new as data_filter (3.11.4): Debian 12's Python 3.11.2 has
        # neither, and an ``except tarfile.FilterError`` there is an AttributeError of its own
        filter_errors = tuple(e for e in (getattr(tarfile, "FilterError", None),) if e is not None)
        try:
            tf.extractall(dest, members=members, **kwargs)  # type: ignore[arg-type]
        except filter_errors as exc:
            raise InputError(f"{tarball}: refused by tar filter: {_one_line(exc)}") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            if is_enospc(exc):
                raise
            raise InputError(f"{tarball}: extraction failed ({_one_line(exc)})") from None
    return sorted({normalize_member(m.name).split("/")[0] for m in members})


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
