"""The manifest of an image or userland cache entry, checked whenever it is read.

``images/<key>/image.json`` and ``userland/<name>-<key>/userland.json`` are
written last, atomically, after a successful build.  When one is read it must
be a JSON object, name the entry's own key, and list files by paths relative
to the entry that resolve (through any symlink) to files inside it.  Anything
else moves the whole entry aside (:func:`harness.cache.quarantine`, one line on
stderr) and the caller builds it anew: never a traceback, never another
entry's file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import cache

BadManifest = cache.DamagedEntry


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise BadManifest(f"{name} is {value!r}, expected a string")
    return value


def _file(directory: Path, label: str, rel: object) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise BadManifest(f"{label} is {rel!r}, expected a path relative to the entry")
    path = directory / rel
    try:
        path.resolve().relative_to(directory.resolve())
    except (OSError, RuntimeError, ValueError):
        raise BadManifest(f"{label} {rel} lies outside the entry") from None
    if not path.is_file():
        raise BadManifest(f"{label} {rel} is missing")
    return path


def files(directory: Path, label: str, value: object) -> dict[str, Path]:
    """A ``{name: relative path}`` object of the manifest, as checked paths inside ``directory``."""
    if not isinstance(value, dict):
        raise BadManifest(f"{label} is {type(value).__name__}, expected an object")
    return {str(name): _file(directory, f"{label}.{name}", rel) for name, rel in value.items()}


def strings(label: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadManifest(f"{label} is {value!r}, expected a list of strings")
    return tuple(value)


def read(directory: Path, name: str, key: str, required: Iterable[str] = ()) -> dict[str, Any] | None:
    """The entry's manifest ``name`` if it names ``key``; None when there is none.

    Raises :class:`BadManifest` when it exists but cannot be trusted.
    """
    data = cache.read_manifest(directory / name, key)
    if data is None:
        return None
    for field in required:
        _text(data, field)
    return data


def set_aside(directory: Path, exc: BadManifest) -> None:
    """Move a damaged entry aside, saying why; the caller builds it anew."""
    cache.quarantine(directory, f"damaged cache entry: {exc}; building it anew")
