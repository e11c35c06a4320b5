"""A build cache entry's ``meta.json``: its schema, written after a build, checked whenever read.

An entry is ``builds/<series>-<config>-<key>/``; its artefacts always sit at
the same places inside it (:func:`artefact_paths`).  ``meta.json`` is written
last, atomically, only after a successful build.  When it is read it must

* be a JSON object of the schema :class:`BuildMeta` describes;
* name the entry's own key (the one its inputs give, which is also the
  entry's name);
* list artefact paths that are exactly this entry's, and that resolve
  (through any symlink) to files inside the entry.

Otherwise :func:`load_checked` moves the whole entry aside
(:func:`harness.cache.quarantine`, one line on stderr) and the build starts
afresh: a damaged entry never gives a traceback, and never another entry's
kernel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cache

ARCH = "i386"
META = "meta.json"
#: artefacts every meta.json lists; ``vmlinux`` is listed too but not required
REQUIRED_PATHS = ("bzImage", "config", "System.map", "log")


BadEntry = cache.DamagedEntry


def artefact_paths(directory: Path) -> dict[str, Path]:
    """Where a build entry's artefacts are: always inside the entry."""
    out = directory / "out"
    return {
        "bzImage": out / "arch" / ARCH / "boot" / "bzImage",
        "config": out / ".config",
        "System.map": out / "System.map",
        "vmlinux": out / "vmlinux",
        "log": directory / "build.log",
    }


def entry_key(directory: Path) -> str:
    """The key an entry's name ends with (``rcfs-default-<key>``)."""
    return directory.name.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class BuildMeta:
    """What ``meta.json`` records about a successful build."""

    key: str
    inputs: dict[str, Any]
    duration: float
    warnings: int
    paths: dict[str, Path]
    finished: str = ""
    jobs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "inputs": self.inputs,
            "duration": round(self.duration, 2),
            "warnings": self.warnings,
            "finished": self.finished,
            "jobs": self.jobs,
            "paths": {name: str(path) for name, path in self.paths.items()},
        }


def new_meta(directory: Path, key: str, inputs: dict[str, Any], duration: float, warnings: int,
             jobs: int) -> BuildMeta:
    return BuildMeta(key=key, inputs=inputs, duration=duration, warnings=warnings,
                     paths=artefact_paths(directory), jobs=jobs,
                     finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def write_meta(directory: Path, meta: BuildMeta) -> None:
    cache.write_json_atomic(directory / META, meta.to_json())


def _number(data: dict[str, Any], name: str, *, integer: bool = False) -> float:
    value = data.get(name)
    ok = isinstance(value, int) or (isinstance(value, float) and not integer)
    if isinstance(value, bool) or not isinstance(value, int | float) or not ok or value < 0:
        raise BadEntry(f"{name} is {value!r}, expected a{'n integer' if integer else ' number'} >= 0")
    return float(value)


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except (OSError, RuntimeError, ValueError):
        return False
    return True


def _paths(value: object, directory: Path) -> dict[str, Path]:
    if not isinstance(value, dict):
        raise BadEntry(f"paths is {type(value).__name__ if value is not None else 'missing'}, "
                       "expected an object")
    expected = artefact_paths(directory)
    paths: dict[str, Path] = {}
    for name, text in value.items():
        if not isinstance(text, str) or not text:
            raise BadEntry(f"paths.{name} is {text!r}, expected a path")
        path = Path(text)
        if name in expected and path != expected[name]:
            raise BadEntry(f"paths.{name} {text} is not this entry's {expected[name]}")
        if not _inside(path, directory):
            raise BadEntry(f"paths.{name} {text} lies outside the entry")
        paths[name] = path
    missing = [name for name in REQUIRED_PATHS if name not in paths]
    if missing:
        raise BadEntry(f"paths lacks {', '.join(missing)}")
    return {**expected, **paths}


def parse_meta(data: object, directory: Path, key: str) -> BuildMeta:
    """Check a decoded meta.json against the entry it was found in; raise :class:`BadEntry`."""
    if not isinstance(data, dict):
        raise BadEntry(f"meta.json holds a JSON {type(data).__name__}, expected an object")
    if data.get("key") != key:
        raise BadEntry(f"meta.json is for key {data.get('key')!r}, this entry's key is {key}")
    inputs = data.get("inputs")
    if not isinstance(inputs, dict):
        raise BadEntry("inputs is missing or not an object")
    jobs = data.get("jobs", 0)
    finished = data.get("finished", "")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not isinstance(finished, str):
        raise BadEntry("jobs or finished has the wrong type")
    return BuildMeta(key=key, inputs=inputs, duration=_number(data, "duration"),
                     warnings=int(_number(data, "warnings", integer=True)),
                     paths=_paths(data.get("paths"), directory), finished=finished, jobs=jobs)


def read_meta(directory: Path, key: str) -> BuildMeta | None:
    """The entry's checked meta.json; None when it has none (no successful build yet)."""
    data = cache.read_manifest(directory / META, key)
    if data is None:
        return None
    return parse_meta(data, directory, key)


def load_checked(directory: Path, key: str) -> BuildMeta | None:
    """:func:`read_meta`, but a damaged entry is moved aside (saying so) and None returned."""
    try:
        return read_meta(directory, key)
    except BadEntry as exc:
        cache.quarantine(directory, f"damaged build entry: {exc}; building it anew")
        return None
