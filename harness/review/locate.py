"""Where in the posted patch a failure comes from: the line to quote for a build problem or a bug.

* a build problem names a tree line: traced back through the patches above
  the posted one (:func:`harness.review.diff.trace_line`);
* a kernel report names functions: the first frame of its EIP and call trace
  that the posted patch defines, mapped to a source line with
  :func:`harness.review.oops.source_line`;
* any other failure names a guest operation (rmdir, a write to ``tasks``,
  reading /proc/mounts...): the function the patch registers for it in its
  operation tables (``.rmdir = rcfs_rmdir``, the ``.write`` of the entry
  whose ``.name`` is ``"tasks"``, ``.show_options``...), and in it (or in a
  function of the patch it calls) the line that returns the errno seen.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.plugin.guest import PROBE
from harness.results.guestlog import GuestCommand
from harness.review.diff import Hunk, PatchDiff, find_definition, function_of, hunk_at, quote, trace_line
from harness.review.oops import Frame, KernelReport, SymbolMap, source_line

#: guest operation -> the fields of a file system's operation tables that implement it
OPERATION_FIELDS: dict[str, tuple[str, ...]] = {
    "mount": ("get_sb", "fill_super"), "umount": ("put_super", "kill_sb", "umount_begin"),
    "mkdir": ("mkdir",), "rmdir": ("rmdir",), "write": ("write",), "read": ("read", "open"),
    "proc-mounts": ("show_options",),
}


@dataclass(frozen=True)
class Location:
    """A line of a patch of the review series: ``layer`` indexes the series' patches."""

    layer: int
    path: str
    line: int
    hunk: Hunk
    function: str | None
    how: str  # how it was found, for the reader
    until: int | None = None  # quote down to this line (a whole short function), not just to ``line``

    def quote(self) -> str:
        return quote(self.hunk, self.until or self.line)


def at_tree_line(diffs: Sequence[PatchDiff], path: str, line: int, how: str) -> Location | None:
    """The patch line that line ``line`` of ``path`` in the final tree comes from."""
    origin = trace_line(diffs, path, line)
    if origin.patch is None:
        return None
    hunk = hunk_at(diffs[origin.patch], path, origin.line)
    if hunk is None:
        return None
    return Location(origin.patch, path, origin.line, hunk, function_of(hunk, origin.line), how)


def _definition(diffs: Sequence[PatchDiff], layers: Sequence[int], function: str
                ) -> tuple[int, Hunk, int] | None:
    for index in layers:
        found = find_definition(diffs[index], function)
        if found is not None:
            return index, found[0], found[1]
    return None


def for_report(report: KernelReport, diffs: Sequence[PatchDiff], posted: Sequence[int],
               symbols: SymbolMap | None, build_dir: Path | None) -> tuple[Location, Frame] | None:
    """The first frame of ``report`` in a function the posted patch defines, as a patch line."""
    for n, frame in enumerate(report.frames):
        frame = symbols.symbolize(frame) if symbols is not None else frame
        if frame.function is None:
            continue
        found = _definition(diffs, posted, frame.function)
        if found is None:
            continue
        index, hunk, def_line = found
        how = f"{'EIP' if n == 0 and report.eip is not None else 'call trace'}: {frame}"
        line = def_line
        if build_dir is not None and frame.offset is not None:
            # a return address points after its call: look up the call itself
            offset = frame.offset if n == 0 and report.eip is not None else max(0, frame.offset - 1)
            tree = source_line(build_dir / "out", build_dir / "src", hunk.path, frame.function, offset,
                               prefer=(hunk.path,))
            if tree is not None:
                loc = at_tree_line(diffs, tree[0], tree[1], how + f" -> {tree[0]}:{tree[1]}")
                if loc is not None:
                    return loc, frame
        return Location(index, hunk.path, line, hunk, frame.function, how + " (start of the function)"), frame
    return None


def operation(cmd: GuestCommand) -> tuple[str, str | None, str | None]:
    """(operation, path, errno) of a guest command: rcfs-probe's op and first failing errno,
    ``cat``/``dd`` of a file (read), /proc/mounts (proc-mounts)."""
    try:
        words = shlex.split(cmd.command)
    except ValueError:
        words = cmd.command.split()
    errno = next((m.group(2) for m in re.finditer(r"^([a-z-]+): (E[A-Z0-9]+|TIMEOUT)$", cmd.stdout, re.M)
                  if m.group(1) not in ("setgroups", "setgid", "setuid", "open", "close")), None)
    if "/proc/mounts" in cmd.command:
        return "proc-mounts", "/proc/mounts", errno
    if words[:1] == [PROBE]:
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in ("-u", "-g", "-n", "-f", "-m", "-t") else rest[1:]
        op = rest[0] if rest else "?"
        path = rest[2] if op == "mount" and len(rest) > 2 else rest[1] if len(rest) > 1 else None
        return op, path, errno
    if words[:1] in (["cat"], ["dd"]):
        path = next((w[3:] if w.startswith("if=") else w for w in words[1:]
                     if not w.startswith("-") and ("=" not in w or w.startswith("if="))), None)
        return "read", path, errno
    return words[0] if words else "?", None, errno


def _initializers(patch: PatchDiff) -> list[dict[str, str]]:
    """The ``.field = value`` groups of the patch's added lines (one per struct initializer)."""
    groups: list[dict[str, str]] = []
    for fd in patch.files:
        for hunk in fd.hunks:
            current: dict[str, str] = {}
            for ln in hunk.lines:
                m = re.match(r"\s*\.(\w+)\s*=\s*(\"[^\"]*\"|[\w&]+)", ln.text)
                if ln.kind == "+" and m:
                    current[m.group(1)] = m.group(2).strip('"')
                elif current and ("};" in ln.text or ln.kind != "+"):
                    groups.append(current)
                    current = {}
            if current:
                groups.append(current)
    return groups


def _body(hunk: Hunk, start: int) -> list[tuple[int, str]]:
    """The added lines of the function that starts at new line ``start``, to its closing brace."""
    out = []
    for ln in hunk.lines:
        if ln.new is None or ln.new < start:
            continue
        out.append((ln.new, ln.text))
        if ln.text.startswith("}"):
            break
    return out


def for_operation(cmd: GuestCommand, diffs: Sequence[PatchDiff], posted: Sequence[int]) -> Location | None:
    """The posted patch's handler of the operation ``cmd`` made, at the line returning its errno."""
    op, path, errno = operation(cmd)
    fields = OPERATION_FIELDS.get(op)
    if not fields:
        return None
    name = posixpath.basename(path) if path and op in ("read", "write") else None
    candidates: list[str] = []
    for index in posted:
        groups = _initializers(diffs[index])
        named = [g for g in groups if name is not None and g.get("name") == name]
        for group in named + groups:
            candidates += [group[f] for f in fields if f in group]
    for function in dict.fromkeys(candidates):
        found = _definition(diffs, posted, function)
        if found is None:
            continue
        index, hunk, start = found
        how = f"the patch's {op} handler {function}()"
        if errno and errno != "TIMEOUT":
            hit = _returns(hunk, start, errno, diffs, posted, depth=2)
            if hit is not None:
                h_index, h_hunk, h_line, h_func = hit
                via = "" if h_func == function else f", via {h_func}()"
                return Location(h_index, h_hunk.path, h_line, h_hunk, h_func,
                                f"{how}{via}, where it returns -{errno}")
        body = _body(hunk, start)
        until = body[-1][0] if body and body[-1][0] - start <= 25 else None
        return Location(index, hunk.path, start, hunk, function, how, until)
    return None


def _returns(hunk: Hunk, start: int, errno: str, diffs: Sequence[PatchDiff], posted: Sequence[int],
             depth: int) -> tuple[int, Hunk, int, str | None] | None:
    """The first line of the function at ``start`` (or, ``depth`` calls deep, of a patch function
    it calls) that makes ``-errno``."""
    body = _body(hunk, start)
    index = next((i for i in posted if hunk_at(diffs[i], hunk.path, start) is hunk), posted[0])
    for number, text in body:
        if re.search(rf"-{errno}\b", text):
            return index, hunk, number, function_of(hunk, start)
    if depth <= 0:
        return None
    for callee in dict.fromkeys(re.findall(r"\b([a-z_]\w*)\s*\(", " ".join(t for _, t in body[1:]))):
        found = _definition(diffs, posted, callee)
        if found is not None and found[2] != start:
            hit = _returns(found[1], found[2], errno, diffs, posted, depth - 1)
            if hit is not None:
                return hit
    return None
