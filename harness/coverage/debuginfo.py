"""A vmlinux's functions, instructions and source lines, read with binutils (nm, objdump, addr2line).

Each instruction maps to a chain of source lines: the line it was compiled
from (for code inlined from another function, that function's line), then
the line of each call it was inlined through, outermost last: what
``addr2line -i`` prints.  The parsers are pure functions of the tools' text,
so they are tested on recorded output; the ``read_*`` functions run the tools
through :mod:`harness.proc`.
"""

from __future__ import annotations

import bisect
import posixpath
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import proc

_NM = re.compile(r"^([0-9a-f]+) ([0-9a-f]+) ([tTwW]) (\S+)$")
_INSN = re.compile(r"^ *([0-9a-f]+):\t", re.M)
_ADDRESS = re.compile(r"^0x([0-9a-f]+)$")
_LOCATION = re.compile(r"^(.*):(\d+|\?)(?: \(discriminator \d+\))?$")

Chain = tuple[tuple[str, int], ...]
"""Source lines of one instruction, innermost first: (path as in the debug info, line)."""


@dataclass(frozen=True, order=True)
class Function:
    start: int
    size: int
    name: str

    @property
    def end(self) -> int:
        return self.start + self.size


def parse_nm(text: str) -> list[Function]:
    """Functions with a size from ``nm -S --defined-only`` output, sorted by address."""
    found = {Function(int(m.group(1), 16), int(m.group(2), 16), m.group(4))
             for m in map(_NM.match, text.splitlines()) if m is not None}
    return sorted(f for f in found if f.size > 0)


def parse_line_rows(text: str, basenames: Collection[str]) -> list[int]:
    """Addresses of the rows of ``objdump --dwarf=decodedline`` output whose file is one of
    ``basenames`` (the tool prints a file's base name only on each row)."""
    if not basenames:
        return []
    names = "|".join(re.escape(b) for b in sorted(basenames))
    row = re.compile(rf"^(?:{names}) +\d+ +0x([0-9a-f]+)", re.M)
    return sorted({int(m.group(1), 16) for m in row.finditer(text)})


def has_line_rows(text: str) -> bool:
    """Does ``objdump --dwarf=decodedline`` output hold any row (is there a line table)?"""
    return re.search(r"^\S+ +\d+ +0x[0-9a-f]+", text, re.M) is not None


def containing(functions: list[Function], addresses: Iterable[int]) -> list[Function]:
    """The functions (sorted, each once) that contain at least one of ``addresses``."""
    starts = [f.start for f in functions]
    found: set[Function] = set()
    for address in addresses:
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and functions[i].start <= address < functions[i].end:
            found.add(functions[i])
    return sorted(found)


def merge_ranges(ranges: Iterable[tuple[int, int]], gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) ranges sorted; overlapping ones, and those less than ``gap`` bytes apart
    (the alignment padding between two functions), merged."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + max(gap - 1, 0):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def parse_instructions(text: str) -> list[int]:
    """Instruction addresses from ``objdump -d`` output."""
    return [int(m.group(1), 16) for m in _INSN.finditer(text)]


def parse_addr2line(text: str) -> dict[int, Chain]:
    """``addr2line -a -i`` output: each address's chain of (path, line), innermost first.

    Unknown locations (``??:0``, ``??:?``) are left out of a chain.
    """
    chains: dict[int, list[tuple[str, int]]] = {}
    current: list[tuple[str, int]] | None = None
    for line in text.splitlines():
        m = _ADDRESS.match(line.strip())
        if m is not None:
            current = chains.setdefault(int(m.group(1), 16), [])
            continue
        loc = _LOCATION.match(line.strip())
        if current is None or loc is None or loc.group(1) == "??" or loc.group(2) == "?":
            continue
        current.append((posixpath.normpath(loc.group(1)), int(loc.group(2))))
    return {address: tuple(chain) for address, chain in chains.items()}


def source_file(path: str, files: Collection[str]) -> str | None:
    """Which of ``files`` (paths relative to the kernel tree) the debug info's ``path`` is."""
    for f in files:
        if path == f or path.endswith("/" + f):
            return f
    return None


# --- running the tools ----------------------------------------------------------------


def read_functions(vmlinux: Path) -> list[Function]:
    return parse_nm(proc.run(["nm", "-S", "--defined-only", vmlinux], what="nm").stdout)


def read_line_table(vmlinux: Path) -> str:
    """The decoded DWARF line table (tens of MB for a small kernel)."""
    return proc.run(["objdump", "--dwarf=decodedline", vmlinux], what="objdump --dwarf").stdout


def read_instructions(vmlinux: Path, start: int, end: int) -> list[int]:
    result = proc.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={start:#x}",
                       f"--stop-address={end:#x}", vmlinux], what="objdump -d")
    return [a for a in parse_instructions(result.stdout) if start <= a < end]


def read_chains(vmlinux: Path, addresses: Iterable[int]) -> dict[int, Chain]:
    text = "".join(f"{a:#x}\n" for a in addresses)
    if not text:
        return {}
    return parse_addr2line(proc.run(["addr2line", "-a", "-i", "-e", vmlinux], input=text,
                                    what="addr2line").stdout)
