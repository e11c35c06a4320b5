"""The cache directory: where every generated thing lives.

Layout (all below :func:`root`)::

    downloads/          verified source tarballs (and ``*.part`` while downloading)
    sources/<id>/       pristine, read-only kernel trees, one per source
    builds/<key>/       one entry per (source, series, config, toolchain)
    images/<hash>/      guest initramfs images
    locks/              lock files

Nothing is ever half-written in place: entries are built in a staging
directory next to their final place and renamed into it when complete
(:func:`staged_dir`), and concurrent writers are serialised with
:func:`lock`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from harness.errors import DiskFull

log = logging.getLogger(__name__)


def root() -> Path:
    """``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness``, else ``~/.cache/harness``."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "harness").absolute()


def subdir(name: str) -> Path:
    path = root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*parts: str | bytes, length: int = 16) -> str:
    """A short, stable sha256 over the given parts (order matters)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def lock(name: str, what: str | None = None) -> Iterator[None]:
    """An exclusive inter-process lock named ``name`` (blocks until free).

    The holder writes its pid into the lock file; a process that has to wait
    says on stderr what it waits for and which pid holds it.
    """
    path = subdir("locks") / f"{name}.lock"
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            print(f"harness: waiting for {what or name} (locked by pid {holder})",
                  file=sys.stderr, flush=True)
            started = time.monotonic()
            fcntl.flock(f, fcntl.LOCK_EX)
            log.info("lock %s acquired after %.1fs", name, time.monotonic() - started)
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def is_enospc(exc: BaseException) -> bool:
    """Is ``exc`` (or an error it wraps, as shutil.Error does) "no space left on device"?"""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        return any("No space left on device" in str(entry) for entry in exc.args[0])
    return "No space left on device" in str(exc) and isinstance(exc, OSError | shutil.Error)


@contextlib.contextmanager
def disk_full_guard(path: Path, what: str) -> Iterator[None]:
    """Turn ENOSPC (also inside a ``shutil.Error``) raised in the block into one :class:`DiskFull`."""
    try:
        yield
    except (OSError, shutil.Error) as exc:
        if is_enospc(exc):
            raise DiskFull(path, what) from None
        raise


@contextlib.contextmanager
def atomic_file(path: Path, mode: Literal["w", "wb"] = "w") -> Iterator[IO[Any]]:
    """A file that appears at ``path`` only complete: written beside it, synced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        f: IO[Any]
        with disk_full_guard(path, "writing it"):
            with (os.fdopen(fd, "w", encoding="utf-8") if mode == "w" else os.fdopen(fd, "wb")) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    if isinstance(data, bytes):
        with atomic_file(path, "wb") as f:
            f.write(data)
    else:
        with atomic_file(path, "w") as f:
            f.write(data)


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def copy_atomic(src: Path, dest: Path) -> None:
    with atomic_file(dest, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out)


class DamagedEntry(ValueError):
    """A cache entry's manifest that cannot be trusted; the message says why."""


def read_manifest(path: Path, key: str) -> dict[str, Any] | None:
    """A cache entry's JSON manifest, which must be an object naming ``key``; None when absent.

    Raises :class:`DamagedEntry` (a subclass's caller may catch it) when the file cannot be read,
    is not JSON, is not an object, or names another key.
    """
    name = path.name
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedEntry(f"{name} cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise DamagedEntry(f"{name} is not valid JSON") from None
    if not isinstance(data, dict):
        raise DamagedEntry(f"{name} holds a JSON {type(data).__name__}, expected an object")
    if data.get("key") != key:
        raise DamagedEntry(f"{name} is for key {data.get('key')!r}, this entry's key is {key}")
    return data


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged cache file or entry aside (``NAME.bad-<time>``), saying so in one line.

    It is kept for inspection, never used again; the caller makes it anew.
    """
    bad = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}")
    os.replace(path, bad)
    print(f"harness: {path}: {reason}; moved aside to {bad.name}", file=sys.stderr, flush=True)
    return bad


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory that becomes ``final`` on success.

    On any exception (Ctrl-C included) the staging directory is removed and
    ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    with disk_full_guard(final.parent, f"creating {final.name}"):
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        with disk_full_guard(final.parent, f"creating {final.name}"):
            yield stage
        if final.exists():
            remove_tree(final)
        os.rename(stage, final)
    except BaseException:
        remove_tree(stage)
        raise


def remove_tree(path: Path) -> None:
    """Remove a tree even where files or directories were made read-only."""
    if not path.exists() and not path.is_symlink():
        return

    def _onerror(func, p, _exc):  # type: ignore[no-untyped-def]
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IRWXU)
        func(p)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=_onerror)
    else:
        path.unlink()


def make_read_only(tree: Path) -> None:
    """Drop every write bit below ``tree`` (the pristine source trees)."""
    for dirpath, _dirnames, filenames in os.walk(tree):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                mode = os.lstat(p).st_mode
                os.chmod(p, mode & ~0o222)
    for dirpath, dirnames, _ in os.walk(tree, topdown=False):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, os.lstat(p).st_mode & ~0o222)
    os.chmod(tree, os.stat(tree).st_mode & ~0o222)
