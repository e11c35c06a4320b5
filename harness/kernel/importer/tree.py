"""Context restoration: find each hunk in the pristine file and take that file's exact lines.

Step 4 of :func:`harness.kernel.importer.import_patch`: every context and
removed line is replaced by the line of the real file it stands for
(whitespace-insensitive matching, starting at the stated line number and
moving ever further from it), and bare lines that match nothing are dropped
as noise.  Added lines keep the text as posted.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import InputError
from harness.kernel.importer.text import Line, Section

_SEARCH_WINDOW = 300
_NO_NEWLINE = "\\ No newline at end of file"


def target_path(old: str | None, new: str | None, against: Path | None) -> str:
    """The tree-relative path a section changes: its name without the ``a/``/``b/`` part,
    unless ``against`` has the name as it is."""
    name = new if new is not None else old
    assert name is not None
    parts = name.split("/")
    candidates = ["/".join(parts[1:]), name] if len(parts) > 1 else [name]
    if against is not None:  # an existing file first, then an existing directory
        for candidate in candidates:
            if (against / candidate).is_file():
                return candidate
        for candidate in candidates:
            if "/" in candidate and (against / candidate).parent.is_dir():
                return candidate
    return candidates[0]


def _norm(text: str) -> str:
    return "".join(text.split())


def _read_lines(path: Path) -> tuple[list[str], bool]:
    """Lines of a file without their newline (exact bytes kept), and whether it ends in one."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        content = handle.read()
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
        return lines, True
    return lines, False


def _align(items: list[Line], lines: list[str], pos: int) -> list[int | None] | None:
    """Match the old side of a hunk at ``pos``: file index per item, None for bare noise."""
    steps: list[dict[int, int]] = [{pos: pos}]  # reachable file index -> previous index
    for item in items:
        reach: dict[int, int] = {}
        for j in steps[-1]:
            if j < len(lines) and _norm(lines[j]) == _norm(item.text):
                reach.setdefault(j + 1, j)
        if item.kind == "?":
            for j in steps[-1]:
                reach.setdefault(j, j)
        if not reach:
            return None
        steps.append(reach)
    j = max(steps[-1])
    result: list[int | None] = []
    for reach in reversed(steps[1:]):
        previous = reach[j]
        result.append(previous if previous != j else None)
        j = previous
    return result[::-1]


def _locate(
    items: list[Line], lines: list[str], stated: int, floor: int
) -> list[int | None] | None:
    """Try ``_align`` at the stated position, then ever further away from it."""
    for offset in range(_SEARCH_WINDOW + 1):
        for pos in (stated + offset, stated - offset) if offset else (stated,):
            if floor <= pos <= len(lines) and (matched := _align(items, lines, pos)) is not None:
                return matched
    return None


def restore(section: Section, against: Path, warnings: list[str]) -> None:
    """Give context and removed lines the exact text of the file; drop bare noise lines."""
    path = against / section.path
    if not path.is_file():
        raise InputError(f"{section.path}: not found in {against} (the patch changes it)")
    lines, final_newline = _read_lines(path)
    floor = 0
    for index, (new_start, hunk) in enumerate(section.hunks, 1):
        where = f"{section.path}: hunk {index}"
        items = [line for line in hunk.lines if line.kind in " -?"]
        matched = _locate(items, lines, max(hunk.old_start - 1, 0), floor)
        if matched is None:
            raise InputError(
                f"{where} ({hunk.stated(new_start)}): context not found in {against} "
                f"near line {hunk.old_start}"
            )
        pairs = [(item, j) for item, j in zip(items, matched, strict=True) if j is not None]
        noise = [item for item, j in zip(items, matched, strict=True) if j is None]
        restored = sum(1 for item, j in pairs if item.text != lines[j] or item.kind == "?")
        for item, j in pairs:
            item.text = lines[j]
            item.kind = " " if item.kind == "?" else item.kind
        hunk.lines = [line for line in hunk.lines if all(line is not item for item in noise)]
        if pairs:
            if pairs[0][1] + 1 != hunk.old_start:
                warnings.append(
                    f"{where}: found at line {pairs[0][1] + 1}, stated {hunk.old_start}"
                )
            hunk.old_start = pairs[0][1] + 1
            floor = pairs[-1][1] + 1
            if floor == len(lines) and not final_newline and hunk.lines[-1] is pairs[-1][0]:
                hunk.lines.append(Line("\\", _NO_NEWLINE[1:], hunk.lines[-1].lineno))
        if noise:
            warnings.append(f"{where}: dropped {len(noise)} bare noise lines")
        if restored:
            warnings.append(f"{where}: restored {restored} lines from the tree")
