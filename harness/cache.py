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
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
def lock(name: str) -> Iterator[None]:
    """An exclusive inter-process lock named ``name`` (blocks until free)."""
    path = subdir("locks") / f"{name}.lock"
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging directory that becomes ``final`` on success.

    On any exception (Ctrl-C included) the staging directory is removed and
    ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
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
