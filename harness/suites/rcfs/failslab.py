"""Fail one chosen slab allocation of one guest system call with 2.6.20's failslab, and say what failed.

How 2.6.20 decides (``lib/fault-inject.c``, ``should_fail()``; ``mm/slab.c``,
``should_failslab()``), for every slab allocation (kmalloc and
kmem_cache_alloc alike):

* ``ignore-gfp-wait`` (1 at boot) skips every allocation that may sleep,
  that is every GFP_KERNEL one: it is set to 0;
* ``task-filter``: only tasks whose ``/proc/PID/make-it-fail`` is 1 (the
  flag is inherited by children, never set in interrupts);
* ``times`` 0 stops everything, counting included; each failure decrements it;
* an internal counter (not in debugfs, never reset) is incremented, and
  unless it is a multiple of ``interval`` nothing fails;
* ``probability`` percent, then the stack-trace filter: one of the (up to
  ``stacktrace-depth`` = 32) return addresses of the call chain, walked
  through frame pointers (FAULT_INJECTION selects FRAME_POINTER), must lie
  in ``[require-start, require-end)``, and none in ``[reject-start,
  reject-end)``.

``interval`` and ``times`` alone cannot fail "the Nth allocation" (the
counter keeps its value between calls), so ``rcfs-probe -F N@ADDR`` sets
the counter through /dev/kmem to ``INTERVAL - N`` just before its one key
system call, with ``times`` 1: the call's Nth allocation (counting every
slab allocation of the process, wherever it comes from) fails if, and only
if, it was made from within the named function.  It reports whether a
failure was injected and how many allocations the call made, so a sweep
N = 1, 2, ... knows when it has tried them all.  The counter's address is
``failslab`` (``/proc/kallsyms``, KALLSYMS_ALL), whose ``struct
fault_attr`` comes first; rcfs-probe knows the offsets of ``times`` and the
counter in it (:data:`FIELDS`), and :meth:`FailSlab.arm` checks the layout
against the values it has just written through debugfs before trusting it.
"""

from __future__ import annotations

import re
import shlex
import weakref
from dataclasses import dataclass

from harness.machine.vm import VM
from harness.plugin.guest import PROBE, GuestSession, ProbeResult, parse_probe

DEBUGFS = "/sys/kernel/debug"
FAILSLAB = f"{DEBUGFS}/failslab"
KMEM = "/dev/kmem"
ULONG_MAX = 2**32 - 1  # i386

# struct fault_attr (include/linux/fault-inject.h), i386: 4-byte words
FIELDS = ("probability", "interval", "times", "space", "verbose", "task_filter",
          "stacktrace_depth", "require_start", "require_end", "reject_start", "reject_end", "count")
VERBOSE = 2  # "FAULT_INJECTION: forcing a failure" and the call chain on the console

#: slab reports that are not Oops/BUG: the test checks the console for them itself
SLAB_REPORT = re.compile(r"Slab corruption|slab error in|Redzone: 0x|Poison overwritten"
                         r"|kmem_cache_destroy: Can't free all objects")


class FaultSetupError(AssertionError):
    """The guest cannot inject faults as asked (wrong kernel, symbol missing, layout mismatch)."""


@dataclass(frozen=True)
class Range:
    """The text of one kernel function: ``[start, end)``."""

    function: str
    start: int
    end: int


@dataclass(frozen=True)
class Injection:
    """What ``rcfs-probe -F`` reported: was allocation ``nth`` failed, how many the call made."""

    nth: int
    injected: bool
    allocations: int


def parse_kallsyms(text: str) -> dict[str, list[tuple[int, str]]]:
    """/proc/kallsyms (or System.map): name -> [(address, type), ...] (a static name can repeat)."""
    symbols: dict[str, list[tuple[int, str]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or not re.fullmatch(r"[0-9a-fA-F]+", fields[0]):
            continue
        symbols.setdefault(fields[2], []).append((int(fields[0], 16), fields[1]))
    return symbols


def function_range(symbols: dict[str, list[tuple[int, str]]], name: str) -> Range:
    """The text of function ``name``: from its address to the next text symbol's."""
    found = [a for a, t in symbols.get(name, []) if t in "tT"]
    if len(found) != 1:
        raise FaultSetupError(
            f"function {name!r}: {len(found)} text symbols in /proc/kallsyms "
            f"(expected one; inlined functions have none)")
    start = found[0]
    above = [a for entries in symbols.values() for a, t in entries if t in "tTwW" and a > start]
    if not above:
        raise FaultSetupError(f"function {name!r}: no text symbol after it")
    return Range(name, start, min(above))


def data_address(symbols: dict[str, list[tuple[int, str]]], name: str) -> int:
    found = [a for a, t in symbols.get(name, []) if t in "dDbB"]
    if len(found) != 1:
        raise FaultSetupError(f"data symbol {name!r}: {len(found)} in /proc/kallsyms (expected one)")
    return found[0]


def check_layout(words: list[int], expect: dict[str, int]) -> None:
    """``words`` (the start of struct fault_attr read from kernel memory) hold ``expect``."""
    read = dict(zip(FIELDS, words, strict=False))
    wrong = {f: (read.get(f), v) for f, v in expect.items() if read.get(f) != v}
    if wrong:
        raise FaultSetupError(
            "struct fault_attr in kernel memory does not hold what debugfs was given "
            f"(field: (read, written)): {wrong}")


def parse_injection(result: ProbeResult) -> Injection:
    """The ``fault: OK N INJECTED ALLOCS`` line of ``rcfs-probe -F``."""
    step = result.step("fault")
    if step is None or not step.ok:
        raise FaultSetupError(f"rcfs-probe -F could not arm failslab: {result.output.strip()[:400]}")
    fields = step.detail.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields) or fields[1] not in ("0", "1"):
        raise FaultSetupError(f"rcfs-probe -F: unexpected report {step.detail!r}")
    return Injection(int(fields[0]), fields[1] == "1", int(fields[2]))


_FRAME = re.compile(r"\[<[0-9a-f]+>\] ([A-Za-z0-9_.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")
#: frames of the report itself and of the slab allocator, above the allocation's caller
_MACHINERY = frozenset({
    "show_trace_log_lvl", "show_trace", "dump_stack", "should_fail", "should_failslab",
    "____cache_alloc", "__cache_alloc", "kmem_cache_alloc", "kmem_cache_zalloc", "__kmalloc",
    "kmalloc", "kzalloc", "kmemdup", "kstrdup", "__kzalloc", "cache_alloc_refill",
    "__kmalloc_track_caller",
})


def injected_chains(console: str) -> list[list[str]]:
    """For each ``FAULT_INJECTION: forcing a failure`` (verbose 2) in ``console``: the functions of
    its call chain from the allocation's caller outwards (the allocator's own frames left out)."""
    chains: list[list[str]] = []
    current: list[str] | None = None
    for line in console.splitlines():
        if "FAULT_INJECTION: forcing a failure" in line:
            current = []
            chains.append(current)
            continue
        if current is None:
            continue
        frames = _FRAME.findall(line)
        if not frames:
            if current:  # the trace has ended
                current = None
            continue
        for f in frames:
            if current or f not in _MACHINERY:  # the allocator's frames come first
                current.append(f)
    return chains


def site(chain: list[str], function: str, depth: int = 4) -> str:
    """A short name of a failed allocation: its callers up to the named ``function``."""
    upto = chain[:chain.index(function) + 1] if function in chain else chain[:depth]
    return " <- ".join(upto[:depth] + (["...", function] if len(upto) > depth else []))


# --- the fixture's object -----------------------------------------------------------------

_symbols: weakref.WeakKeyDictionary[VM, dict[str, list[tuple[int, str]]]] = weakref.WeakKeyDictionary()

_SETUP = f"""
grep -q ' {DEBUGFS} debugfs ' /proc/mounts || mount -t debugfs none {DEBUGFS}
[ -c {KMEM} ] || mknod {KMEM} c 1 2
[ -d {FAILSLAB} ] && [ -e /proc/self/make-it-fail ] || {{ echo 'no failslab'; exit 1; }}
"""


class FailSlab:
    """The ``failslab`` fixture: ``arm(function)``, then ``probe(n, ...)`` fails allocation ``n``."""

    def __init__(self, guest: GuestSession) -> None:
        self.guest = guest
        self.range: Range | None = None
        self.attr_address = 0  # failslab's struct fault_attr

    def symbols(self) -> dict[str, list[tuple[int, str]]]:
        """The guest kernel's /proc/kallsyms (text symbols and ``failslab``), read once per VM."""
        vm = self.guest.vm
        if vm not in _symbols:
            text = self.guest.sh("awk '$2 ~ /^[tTwW]$/ || $3 == \"failslab\" || $3 == \"init_nsproxy\"' "
                                 "/proc/kallsyms", timeout=120)
            _symbols[vm] = parse_kallsyms(text)
        return _symbols[vm]

    def address(self, name: str) -> int:
        return data_address(self.symbols(), name)

    def arm(self, function: str, reject: str | None = None) -> Range:
        """Make failslab fail only this process's allocations made from within ``function``
        and not from within ``reject`` (disarmed: ``times`` stays 0 until rcfs-probe arms it
        around its call)."""
        out = self.guest.run(_SETUP)
        if out.exit_status != 0:
            raise FaultSetupError(f"the guest kernel has no failslab: {out.stdout}{out.stderr}".strip())
        symbols = self.symbols()
        rng = function_range(symbols, function)
        no = function_range(symbols, reject) if reject else Range("", 0, 0)
        base = data_address(symbols, "failslab")  # struct failslab_attr: its fault_attr comes first
        values = {"probability": 100, "times": 0, "space": 0, "verbose": VERBOSE, "task_filter": 1,
                  "stacktrace_depth": 32, "require_start": rng.start, "require_end": rng.end,
                  "reject_start": no.start, "reject_end": no.end}
        self._write({"ignore-gfp-wait": "N", "times": "0", "probability": "100", "space": "0",
                     "verbose": str(VERBOSE), "task-filter": "Y", "stacktrace-depth": "32",
                     "require-start": str(rng.start), "require-end": str(rng.end),
                     "reject-start": str(no.start), "reject-end": str(no.end)})
        check_layout(self._words(base, len(FIELDS)), values)
        self.range = rng
        self.attr_address = base
        return rng

    def disarm(self) -> None:
        """failslab as at boot, except probability 0 and times 0: nothing fails."""
        self._write({"times": "0", "probability": "0", "task-filter": "N", "ignore-gfp-wait": "Y",
                     "require-start": "0", "require-end": str(ULONG_MAX), "reject-start": "0",
                     "reject-end": "0", "interval": "1"})
        self.range = None

    def probe_argv(self, nth: int, *args: str) -> list[str]:
        """The rcfs-probe command that fails allocation ``nth`` of its call ``args``."""
        assert self.range is not None, "failslab is not armed"
        return [PROBE, "-F", f"{nth}@{self.attr_address:x}", *args]

    def probe(self, nth: int, *args: str) -> tuple[ProbeResult, Injection]:
        result = self.guest.run(self.probe_argv(nth, *args))
        parsed = parse_probe(result.stdout, result.exit_status)
        return parsed, parse_injection(parsed)

    def _write(self, values: dict[str, str]) -> None:
        script = "\n".join(f"echo {shlex.quote(v)} > {FAILSLAB}/{k}" for k, v in values.items())
        self.guest.sh("set -e\n" + script)

    def _words(self, address: int, n: int) -> list[int]:
        out = self.guest.sh(f"dd if={KMEM} bs=4 count={n} skip={address // 4} 2>/dev/null "
                            f"> /tmp/failslab.words && {PROBE} -x read /tmp/failslab.words")
        hexed = next((line for line in out.splitlines() if re.fullmatch(r"[0-9a-f]+", line)), "")
        if len(hexed) != 8 * n:
            raise FaultSetupError(f"could not read {n} words at {address:#x} through {KMEM}: {out!r}")
        return [int.from_bytes(bytes.fromhex(hexed[8 * i:8 * i + 8]), "little") for i in range(n)]
