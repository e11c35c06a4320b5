"""Kernel reports read as data: the EIP and call trace of an oops, mapped to functions and source lines.

:func:`parse_reports` finds the reports in a test's kernel-log excerpt (the
plugin's ``kind: line`` headers, or raw console text) with their EIP and
call-trace addresses.  :class:`SymbolMap` maps an address to
``function+offset`` through the build's ``System.map``.  :func:`source_line`
maps ``function+offset`` to ``file:line``: the build keeps no debug
information, so the one object file that defines the function is compiled
again with ``-g`` (the command kbuild recorded, into a temporary file; ``-g``
does not change the generated code) and ``addr2line`` reads the line.
"""

from __future__ import annotations

import bisect
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.errors import HarnessError
from harness.machine.console import classify_line

_ADDR = r"(?:0x)?([0-9a-f]{8})"
_EIP_LINE = re.compile(rf"^EIP:\s+[0-9a-f]{{4}}:\[<{_ADDR}>\]")
_EIP_AT = re.compile(r"^EIP is at (\S+?)\+0x([0-9a-f]+)/0x([0-9a-f]+)")
_FRAME = re.compile(rf"\[<{_ADDR}>\]\s*(?:(\S+?)\+0x([0-9a-f]+)/0x([0-9a-f]+))?")
_HEADER = re.compile(r"^(panic|oops|bug|lockdep|warning|init-failed): (.*)$")
SAME_REPORT = 8
"""A report line this close after a report's title belongs to it (as the console scanner has it)."""


@dataclass(frozen=True)
class Frame:
    address: int
    function: str | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = f"{self.function}+0x{self.offset:x}" if self.function is not None else "?"
        return f"{where} [<{self.address:08x}>]"


@dataclass(frozen=True)
class KernelReport:
    """One kernel report: its kind (as the console scanner names it), first line, EIP and trace."""

    kind: str
    title: str
    eip: Frame | None
    trace: tuple[Frame, ...]
    text: str

    @property
    def frames(self) -> tuple[Frame, ...]:
        """The EIP first, then the call trace (each address once)."""
        seen: set[int] = set()
        out = [self.eip] if self.eip is not None else []
        for f in self.trace:  # "func+0x0" entries are stale pointers to a function's start
            eip = self.eip.address if self.eip is not None else None
            if f.offset != 0 and f.address not in seen and f.address != eip:
                seen.add(f.address)
                out.append(f)
        return tuple(out)


def _split(text: str) -> list[tuple[str, str, list[str]]]:
    """(kind, title, lines) per report.

    The plugin's excerpts start with a ``kind: line`` header and run 40 lines
    on, maybe into the next report (which has its own header later): a
    chunk ends where the console scanner would see a new report (a report
    line more than :data:`SAME_REPORT` lines after the title).  Raw console
    text is cut the same way.
    """
    chunks: list[tuple[str, str, list[str]]] = []
    title_at: int | None = None  # index (in the chunk's lines) of its title line
    closed = False
    all_lines = text.splitlines()
    headed = bool(all_lines) and _HEADER.match(all_lines[0]) is not None
    for line in all_lines:
        header = _HEADER.match(line)
        if header:
            chunks.append((header.group(1), header.group(2).strip(), []))
            title_at, closed = None, False
            continue
        kind = classify_line(line)
        if chunks and not closed:
            lines = chunks[-1][2]
            if title_at is None and line.strip() == chunks[-1][1]:
                title_at = len(lines)
            elif kind is not None and title_at is not None and len(lines) - title_at > SAME_REPORT:
                if headed:
                    closed = True  # its own header follows
                    continue
                chunks.append((kind, line.strip(), [line]))
                title_at = 0
                continue
            lines.append(line)
        elif not chunks and kind is not None:
            chunks.append((kind, line.strip(), [line]))
            title_at = 0
    return chunks


def parse_reports(text: str) -> list[KernelReport]:
    reports = []
    for kind, title, lines in _split(text):
        eip: Frame | None = None
        eip_at: tuple[str, int] | None = None
        trace: list[Frame] = []
        for line in lines:  # a warning's stack has no "Call Trace:" line: every frame line counts
            if m := _EIP_LINE.match(line):
                eip = Frame(int(m.group(1), 16))
            elif m := _EIP_AT.match(line):
                eip_at = (m.group(1), int(m.group(2), 16))
            elif not line.startswith("EIP"):  # stack lines, and lockdep's "at: [<addr>] func+off/size"
                trace += [Frame(int(m.group(1), 16), m.group(2), int(m.group(3), 16) if m.group(3) else None)
                          for m in _FRAME.finditer(line)]
        if eip is not None and eip_at is not None:
            eip = Frame(eip.address, eip_at[0], eip_at[1])
        body = "\n".join(lines)
        reports.append(KernelReport(kind, title, eip, tuple(trace), f"{title}\n{body}".strip()))
    return reports


class SymbolMap:
    """Text symbols of a ``System.map``: address -> function and offset."""

    def __init__(self, text: str) -> None:
        entries = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1] in "tTwW" and len(fields[1]) == 1:
                entries.append((int(fields[0], 16), fields[2]))
        entries.sort()
        self._addresses = [a for a, _ in entries]
        self._names = [n for _, n in entries]

    @classmethod
    def load(cls, path: Path) -> SymbolMap | None:
        try:
            return cls(path.read_text(errors="replace"))
        except OSError:
            return None

    def lookup(self, address: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self._addresses, address) - 1
        if i < 0:
            return None
        return self._names[i], address - self._addresses[i]

    def symbolize(self, frame: Frame) -> Frame:
        if frame.function is not None:
            return frame
        found = self.lookup(frame.address)
        return Frame(frame.address, found[0], found[1]) if found else frame


def _compile_command(cmd_file: Path, obj: str) -> list[str] | None:
    """kbuild's recorded command for ``obj`` (``cmd_<obj> := ...``), as argv."""
    try:
        text = cmd_file.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"cmd_{obj} := "):
            return shlex.split(line.split(" := ", 1)[1])
    return None


def source_line(out_dir: Path, src_dir: Path, source_file: str, function: str, offset: int,
                prefer: tuple[str, ...] = ()) -> tuple[str, int] | None:
    """``file:line`` (relative to the tree) of ``function+offset``, ``function`` defined in
    ``source_file`` (a tree-relative ``.c`` path); None when it cannot be had.  Of an inlined
    chain, the innermost line in one of the ``prefer`` files is taken, else the innermost."""
    obj = source_file[:-2] + ".o"
    argv = _compile_command(out_dir / Path(obj).parent / f".{Path(obj).name}.cmd", obj)
    if not argv or "-o" not in argv:
        return None
    with tempfile.TemporaryDirectory(prefix="harness-g-") as tmp:
        target = Path(tmp) / "with-debug-info.o"
        argv = [a for a in argv if not a.startswith("-Wp,-MD")]
        argv[argv.index("-o") + 1] = str(target)
        try:
            proc.run([*argv, "-g"], cwd=out_dir, what=f"compiling {source_file} with -g")
            symbols = proc.run(["nm", str(target)], what="nm").stdout
        except HarnessError:
            return None
        start = next((int(f[0], 16) for f in (ln.split() for ln in symbols.splitlines())
                      if len(f) == 3 and f[2] == function and f[1] in "tT"), None)
        if start is None:
            return None
        try:
            lines = proc.run(["addr2line", "-i", "-e", str(target), f"0x{start + offset:x}"],
                             what="addr2line").stdout.split()
        except HarnessError:
            return None
    found = []
    for item in lines:
        path, _, number = item.rpartition(":")
        number = number.split()[0] if number else ""
        if path and number.isdigit() and int(number) > 0:
            rel = path[len(str(src_dir)) + 1:] if path.startswith(str(src_dir) + "/") else path
            found.append((rel, int(number)))
    preferred = [f for f in found if f[0] in prefer]
    best = preferred or found
    return best[0] if best else None
