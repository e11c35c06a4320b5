"""Unified diffs as data: files, hunks and numbered lines; a tree line traced back to the patch hunk.

A review quotes the posted patch where a problem comes from.  The build and
the kernel report positions in the final tree (the posted patch plus the
patches applied after it); :func:`trace_line` walks such a position back
through the later patches to the posted one, and :func:`quote` quotes the
hunk around it with ``> ``, as a reply to a patch mail does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_FUNC = re.compile(r"^[A-Za-z_][\w \t\*]*\b([A-Za-z_]\w*)\s*\([^;]*$")


@dataclass(frozen=True)
class Line:
    kind: str  # " " context, "+" added, "-" removed
    text: str
    old: int | None  # its line number before the patch (None: added)
    new: int | None  # after the patch (None: removed)


@dataclass(frozen=True)
class Hunk:
    path: str
    index: int  # 1-based within its file
    header: str  # the @@ line as it stands in the patch
    old_start: int
    new_start: int
    lines: tuple[Line, ...]

    @property
    def new_end(self) -> int:
        """The last new-side line number the hunk covers (new_start - 1 when it adds nothing)."""
        numbers = [ln.new for ln in self.lines if ln.new is not None]
        return max(numbers) if numbers else self.new_start - 1

    def at_new(self, number: int) -> Line | None:
        return next((ln for ln in self.lines if ln.new == number), None)


@dataclass(frozen=True)
class FileDiff:
    path: str  # the file's path in the tree (without a/ b/)
    created: bool
    deleted: bool
    hunks: tuple[Hunk, ...]


@dataclass(frozen=True)
class PatchDiff:
    name: str
    files: tuple[FileDiff, ...]

    def file(self, path: str) -> FileDiff | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)


def _strip(name: str) -> str | None:
    name = name.split("\t", 1)[0].strip()
    if name == "/dev/null":
        return None
    return name[2:] if name[:2] in ("a/", "b/") else name


def parse_diff(text: str, name: str = "patch") -> PatchDiff:
    """The files and hunks of a unified diff (anything before, between or after them is ignored)."""
    lines = text.splitlines()
    files: list[FileDiff] = []
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        old, new = _strip(lines[i][4:]), _strip(lines[i + 1][4:])
        path = new or old or "?"
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and (m := _HUNK.match(lines[i])):
            header = lines[i]
            old_no, new_no = int(m.group(1)), int(m.group(3))
            old_left = int(m.group(2)) if m.group(2) is not None else 1
            new_left = int(m.group(4)) if m.group(4) is not None else 1
            old_no, new_no = (old_no if old_left else old_no + 1), (new_no if new_left else new_no + 1)
            body: list[Line] = []
            i += 1
            while i < len(lines) and (old_left > 0 or new_left > 0):
                raw = lines[i]
                kind, rest = (raw[:1] or " "), raw[1:]
                if kind == "\\":  # "\ No newline at end of file"
                    i += 1
                    continue
                if kind == "+":
                    body.append(Line("+", rest, None, new_no))
                    new_no, new_left = new_no + 1, new_left - 1
                elif kind == "-":
                    body.append(Line("-", rest, old_no, None))
                    old_no, old_left = old_no + 1, old_left - 1
                elif kind == " ":
                    body.append(Line(" ", rest, old_no, new_no))
                    old_no, new_no, old_left, new_left = old_no + 1, new_no + 1, old_left - 1, new_left - 1
                else:
                    break
                i += 1
            first_new = next((ln.new for ln in body if ln.new is not None), int(m.group(3)))
            hunks.append(Hunk(path, len(hunks) + 1, header, int(m.group(1)), first_new, tuple(body)))
            while i < len(lines) and lines[i].startswith("\\"):
                i += 1
        files.append(FileDiff(path, old is None, new is None, tuple(hunks)))
    return PatchDiff(name, tuple(files))


def to_older(patch: PatchDiff, path: str, number: int) -> int | None:
    """Line ``number`` of ``path`` after ``patch``, as a line number before it; None when
    ``patch`` added that line (it is the patch's own)."""
    fd = patch.file(path)
    if fd is None:
        return number
    if fd.created:
        return None
    hunk = next((h for h in fd.hunks if h.new_start <= number <= h.new_end), None)
    if hunk is not None:
        line = hunk.at_new(number)
        return None if line is None or line.old is None else line.old
    return number - _shift(fd, number)


def _shift(fd: FileDiff, number: int) -> int:
    """How many lines the hunks above new line ``number`` added, net."""
    shift = 0
    for hunk in fd.hunks:
        if hunk.new_end < number:
            shift += sum(ln.kind == "+" for ln in hunk.lines) - sum(ln.kind == "-" for ln in hunk.lines)
    return shift


@dataclass(frozen=True)
class Origin:
    """Where a line of the final tree comes from: ``patch`` (an index into the series) added it,
    or it was there before them all (``patch`` None, ``line`` its number in the base tree)."""

    patch: int | None
    line: int


def trace_line(patches: Sequence[PatchDiff], path: str, number: int) -> Origin:
    """Follow line ``number`` of ``path`` in the tree after ``patches`` (in order) back to the
    patch that added it."""
    for index in range(len(patches) - 1, -1, -1):
        older = to_older(patches[index], path, number)
        if older is None:
            return Origin(index, number)
        number = older
    return Origin(None, number)


def hunk_at(patch: PatchDiff, path: str, number: int) -> Hunk | None:
    """The hunk of ``patch`` whose new side holds line ``number`` of ``path``."""
    fd = patch.file(path)
    if fd is None:
        return None
    return next((h for h in fd.hunks if h.new_start <= number <= h.new_end), None)


def function_of(hunk: Hunk, number: int) -> str | None:
    """The C function the new line ``number`` of ``hunk`` is in, if the hunk shows its start."""
    for line in reversed([ln for ln in hunk.lines if ln.new is not None and ln.new <= number]):
        m = _FUNC.match(line.text)
        if m and not line.text.startswith(("static const", "struct ", "#")) and m.group(1) not in (
                "if", "for", "while", "switch", "return", "sizeof"):
            return m.group(1)
        if line.text.startswith("}"):
            return None
    return None


def find_definition(patch: PatchDiff, function: str) -> tuple[Hunk, int] | None:
    """The hunk and new line number where ``patch`` adds the definition of ``function``."""
    pattern = re.compile(rf"^[A-Za-z_][\w \t\*]*\b{re.escape(function)}\s*\([^;]*$")
    for fd in patch.files:
        for hunk in fd.hunks:
            for ln in hunk.lines:
                if ln.kind == "+" and ln.new is not None and pattern.match(ln.text):
                    return hunk, ln.new
    return None


def quote(hunk: Hunk, focus: int | None = None, *, before: int = 8, after: int = 0,
          limit: int = 30) -> str:
    """The hunk quoted with ``> `` (its @@ line first), as a reply quotes a patch.

    With ``focus`` (a new-side line number) the quote ends ``after`` lines
    past it, so a comment can follow the line it is about; when the hunk is
    long it starts at the function the line is in (if near) or ``before``
    lines above.  Cut lines are shown as ``> [...]``.
    """
    body = list(hunk.lines)
    start, end = 0, min(len(body), limit)
    at = next((i for i, ln in enumerate(body) if ln.new == focus), None) if focus is not None else None
    if at is not None:
        end = min(len(body), at + after + 1)
        if end > limit:
            start = max(0, at - before)
            for i in range(at, max(-1, at - before - 6), -1):
                if _FUNC.match(body[i].text):
                    start = i
                    break
    out = [f"> {hunk.header}"]
    if start > 0:
        out.append("> [...]")
    out += [f"> {ln.kind}{ln.text}".rstrip() for ln in body[start:end]]
    if end < len(body):
        out.append("> [...]")
    return "\n".join(out)
