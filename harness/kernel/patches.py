"""Patch series, quilt convention.

``patches/<name>/series`` lists the patch files of a series in order (blank
lines and ``#`` comments allowed, an optional ``-p1`` after a name).  A
series may build on another: ``patches/<name>/base`` holds that series'
name.  :func:`load_series` resolves the chain, base first.

:func:`apply_series` applies a series to a tree all-or-nothing: every patch
is tried with ``--dry-run`` before it is applied, and a failure names the
patch file, the hunk, the target file and the line.  Callers apply into a
staging tree that is thrown away on failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness import cache, proc, resources
from harness.errors import DiskFull, InputError, StageError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def patches_dir() -> Path:
    """The shipped series (``harness/data/patches``)."""
    return resources.shipped("patches")


def search_path(root: Path | None = None) -> list[Path]:
    """Where series are looked up by name: ``root`` alone if given, else
    ``$HARNESS_PATCHES`` (your own series, first) then the shipped ones."""
    return [root] if root is not None else resources.search_path("HARNESS_PATCHES", "patches")


def series_dir(name: str, root: Path | None = None) -> Path | None:
    """The directory of series ``name``: the first on the search path that has it."""
    if not NAME_RE.match(name):
        return None
    return next((d / name for d in search_path(root) if (d / name / "series").is_file()), None)


@dataclass(frozen=True)
class Patch:
    series: str
    name: str
    path: Path
    sha256: str

    @property
    def subject(self) -> str:
        """The ``Subject:`` of the patch header, or its file name."""
        for line in self.path.read_text(errors="replace").splitlines()[:40]:
            if line.startswith("Subject:"):
                return line.split(":", 1)[1].strip()
        return self.name


@dataclass(frozen=True)
class Series:
    """A resolved series: ``patches`` holds the whole chain, base series first."""

    name: str
    patches: tuple[Patch, ...]
    chain: tuple[str, ...]

    def digest(self) -> str:
        return cache.digest(*(f"{p.series}/{p.name}:{p.sha256}" for p in self.patches))

    def own_patches(self) -> tuple[Patch, ...]:
        return tuple(p for p in self.patches if p.series == self.name)

    def prefix(self, count: int) -> Series:
        """The chain cut after ``count`` patches (for bisecting)."""
        return Series(self.name, self.patches[:count], self.chain)


def available(root: Path | None = None) -> list[str]:
    names = {p.name for d in search_path(root) if d.is_dir() for p in d.iterdir()
             if (p / "series").is_file()}
    return sorted(names)


def _parse_series_file(name: str, directory: Path) -> list[Patch]:
    series_file = directory / "series"
    patches: list[Patch] = []
    for lineno, raw in enumerate(series_file.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) > 2 or (len(fields) == 2 and fields[1] != "-p1"):
            raise InputError(
                f"{series_file}:{lineno}: {raw.strip()!r}: expected a patch file name, "
                "optionally followed by -p1"
            )
        filename = fields[0]
        path = directory / filename
        if "/" in filename or not path.is_file():
            raise InputError(
                f"{series_file}:{lineno}: patch {filename!r} does not exist in {directory}"
            )
        patches.append(Patch(name, filename, path, cache.file_sha256(path)))
    if not patches:
        raise InputError(f"{series_file}: lists no patches; expected one patch file name per line")
    return patches


def load_series(name: str, root: Path | None = None) -> Series:
    """Resolve series ``name`` and its bases; raise InputError on any damage."""
    chain: list[str] = []
    patches: list[Patch] = []
    current: str | None = name
    while current is not None:
        directory = series_dir(current, root)
        if directory is None:
            known = ", ".join(available(root)) or "none"
            what = "series" if current == name else f"base series of {chain[-1]!r}"
            raise InputError(f"unknown {what} {current!r}; expected one of: {known}")
        if current in chain:
            raise InputError(f"series {name!r}: base chain loops ({' -> '.join(chain + [current])})")
        chain.append(current)
        patches[:0] = _parse_series_file(current, directory)
        base_file = directory / "base"
        current = base_file.read_text().strip() or None if base_file.is_file() else None
    return Series(name, tuple(patches), tuple(reversed(chain)))


_FAILED_HUNK = re.compile(r"Hunk #(\d+) FAILED at (\d+)")
_PATCHING = re.compile(r"^(?:patching|checking) file (.+)$")
_DANGEROUS = "Ignoring potentially dangerous file name"


def _explain_failure(patch: Patch, output: str) -> str:
    """Turn GNU patch's output into 'patch P: hunk N of FILE failed at line L'.

    A file name patch refused as dangerous (absolute, or with ``..``) is named
    first: it is why the target "cannot be found".
    """
    refused = [line.strip() for line in output.splitlines() if _DANGEROUS in line]
    reason = _reason(patch, output)
    if refused:
        return f"patch {patch.series}/{patch.name}: {'; '.join(refused)}; {reason}"
    separator = " " if reason.startswith("does not apply") else ": "
    return f"patch {patch.series}/{patch.name}{separator}{reason}"


def _reason(patch: Patch, output: str) -> str:
    target = "?"
    for line in output.splitlines():
        m = _PATCHING.match(line.strip())
        if m:
            target = m.group(1).strip("'")
            continue
        m = _FAILED_HUNK.search(line)
        if m:
            return f"hunk #{m.group(1)} of {target} does not apply at line {m.group(2)}"
        if "No file to patch" in line or "can't find file" in line:
            return f"target file not found ({line.strip()})"
        if "Reversed (or previously applied)" in line:
            return f"{target} is already patched (reversed?)"
        if "malformed patch" in line or "Only garbage" in line:
            return line.strip()
    tail = " | ".join(output.strip().splitlines()[-3:])
    return f"does not apply: {tail}"


def apply_patch(patch: Patch, tree: Path) -> None:
    """Apply one patch (dry run first, so a failure changes nothing)."""
    base = ["patch", "-p1", "--forward", "--fuzz=0", "--batch", "--no-backup-if-mismatch",
            "--reject-file=-", "-i", str(patch.path)]
    for argv in ([*base, "--dry-run"], base):
        result = proc.run(argv, cwd=tree, check=False)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            full = proc.enospc_line(output)
            if full is not None:
                raise DiskFull(tree, f"applying {patch.series}/{patch.name} ({full})")
            raise StageError(_explain_failure(patch, output), stage="patch")


def apply_series(series: Series, tree: Path) -> None:
    """Apply every patch of ``series`` in order.  The caller discards ``tree`` on error."""
    for patch in series.patches:
        apply_patch(patch, tree)
