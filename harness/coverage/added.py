"""The lines a patch series adds: which files it touches, and its '+' lines in the patched file.

The series measured is the kernel's chain without its root (``compat``, the
build fixes for today's toolchain): for ``rcfs-fixes`` that is ``rcfs``
(the posted patch and its repairs), ``rcfs-testss`` and the fixes.  Its added
lines are the lines of each patched C file that are not in the pristine file,
numbered as in the patched file: the '+' lines of the chain's combined diff,
fix patches included (a line 0001 added and a fix replaced is not in the
kernel, so it cannot be measured).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from harness.kernel.patches import Series

#: source files whose lines can hold code
CODE_SUFFIXES = (".c", ".h")
_NEW_FILE = re.compile(r"^\+\+\+ (\S+)")
CONTEXT = 3


def measured_patches(series: Series) -> list[Path]:
    """The patch files of ``series`` whose lines are measured: all but the root series'."""
    root = series.chain[0] if len(series.chain) > 1 else None
    return [p.path for p in series.patches if p.series != root]


def files_of_patch(text: str) -> list[str]:
    """The C files (``.c``, ``.h``) a ``-p1`` patch creates or changes, in order."""
    found: list[str] = []
    for line in text.splitlines():
        m = _NEW_FILE.match(line)
        if m is None or m.group(1) == "/dev/null":
            continue
        path = m.group(1).split("/", 1)[1] if "/" in m.group(1) else m.group(1)
        if path.endswith(CODE_SUFFIXES) and path not in found:
            found.append(path)
    return found


def scoped_files(series: Series) -> list[str]:
    """Every C file the measured patches of ``series`` touch, sorted."""
    files: set[str] = set()
    for path in measured_patches(series):
        files.update(files_of_patch(path.read_text(errors="replace")))
    return sorted(files)


def added_lines(old: str, new: str) -> list[int]:
    """Line numbers (1-based, in ``new``) of the lines of ``new`` that a diff from ``old`` adds."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    lines: list[int] = []
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            lines.extend(range(j1 + 1, j2 + 1))
    return lines


@dataclass(frozen=True)
class DiffLine:
    """One line of a hunk: ``kind`` is ' ' (context), '+' (added) or '-' (removed)."""

    kind: str
    number: int | None  # its line number in the patched file; None for a removed line
    text: str


def hunks(old: str, new: str, context: int = CONTEXT) -> list[list[DiffLine]]:
    """The diff from ``old`` to ``new`` as hunks with ``context`` lines around each change."""
    a, b = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    result: list[list[DiffLine]] = []
    for group in matcher.get_grouped_opcodes(context):
        hunk: list[DiffLine] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                hunk += [DiffLine(" ", j + 1, b[j]) for j in range(j1, j2)]
                continue
            hunk += [DiffLine("-", None, a[i]) for i in range(i1, i2)]
            hunk += [DiffLine("+", j + 1, b[j]) for j in range(j1, j2)]
        result.append(hunk)
    return result
