"""Leaks: repeating an rcfs operation must leave the kernel's own counters where they were.

Each case runs in ONE guest shell script (no SSH session comes or goes in
between): a warm-up round of the operation, the counters, ``REPS`` more
repetitions, the counters again, then the containers the case made are
removed and its hierarchies unmounted, which must succeed (a reference
leaked to a container's nsproxy keeps its rmdir busy for ever).  The
counters:

* ``/proc/slabinfo``: the active objects of every kmalloc cache (``size-32``
  ... ``size-131072``; with DEBUG_SLAB an object's red zones and owner word
  can put it one size class above its size).  No cache may grow by more
  than ``NOISE`` objects.  slabinfo counts an object freed into a CPU's
  array cache as active (up to 32 per cache with DEBUG_SLAB, plus the
  batch of 16 a refill takes from a slab), so a cache moves by a few
  dozen objects with no leak at all; see ``NOISE`` for what was measured.
* ``/proc/slab_allocators`` (CONFIG_DEBUG_SLAB_LEAK): the live objects of
  each cache by the function that allocated them.  The failure message
  names the functions whose objects grew.
* the reference count of ``init_nsproxy``, the top container of every
  hierarchy (it is static: slabinfo cannot see a reference leaked to it),
  read through /dev/kmem at its System.map address.  It must not change:
  the same tasks use it at both readings.

A leak of one object per repetition grows a cache by ``REPS``, far above
the noise.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.machine.vm import VM
from harness.plugin import pool
from harness.plugin.guest import Mount, Rcfs
from harness.suites.rcfs.detached import run_watched

REPS = 200  # repetitions between the two readings of the counters
WARMUP = 20  # repetitions before the first reading (lazily made objects, full array caches)
# Noise measured on rcfs-fixes/debug, where nothing leaks: every case below
# plus a no-op, 5 times each, in 3 rounds (120 readings of REPS repetitions):
# kmalloc caches in /proc/slabinfo moved by -7 to +16 objects (+16: size-32,
# 4 times; most readings 0 to 4), per-cache sums of /proc/slab_allocators by
# -6 to +5, init_nsproxy.count by 0.  NOISE is over twice the largest; a leak
# of one object per repetition grows a cache by REPS = 200.
NOISE = 40

KMALLOC = re.compile(r"^size-[0-9]+$")
BEFORE, AFTER, END = "=== before", "=== after", "=== end"
KMEM_WORD = "/tmp/leaks.word"


@dataclass(frozen=True)
class Counters:
    """The kernel's counters at one moment."""

    active: dict[str, int]  # kmalloc cache -> active objects (/proc/slabinfo)
    callers: Counter[tuple[str, str]]  # (cache, allocating function) -> live objects
    top_refs: int  # init_nsproxy.count


def counters_script(top_count_address: int) -> str:
    """Shell that prints /proc/slabinfo, /proc/slab_allocators and init_nsproxy.count (as hex)."""
    return (f"cat /proc/slabinfo; echo '--- allocators'; cat /proc/slab_allocators; "
            f"dd if=/dev/kmem of={KMEM_WORD} bs=4 count=1 skip={top_count_address // 4} 2>/dev/null; "
            f"echo \"--- top $(rcfs-probe -x read {KMEM_WORD} | grep -v :)\"")


def parse_counters(text: str) -> Counters:
    """What :func:`counters_script` printed."""
    info, _, rest = text.partition("--- allocators\n")
    allocators, _, top = rest.partition("--- top ")
    active: dict[str, int] = {}
    for line in info.splitlines():
        fields = line.split()
        if len(fields) >= 2 and KMALLOC.match(fields[0]) and fields[1].isdigit():
            active[fields[0]] = int(fields[1])
    callers: Counter[tuple[str, str]] = Counter()
    for line in allocators.splitlines():
        # "size-128: 12 rcfs_create+0x1f/0x1c0"
        m = re.match(r"^(\S+): ([0-9]+) (\S+)", line)
        if m and KMALLOC.match(m.group(1)):
            callers[(m.group(1), m.group(3).split("+")[0])] += int(m.group(2))
    word = top.split()[0] if top.split() else ""
    assert re.fullmatch(r"[0-9a-f]{8}", word), f"init_nsproxy.count not read: {top[:200]!r}"
    return Counters(active, callers, int.from_bytes(bytes.fromhex(word), "little", signed=True))


@dataclass(frozen=True)
class Measured:
    before: Counters
    after: Counters
    fails: list[str]  # the FAIL lines the script printed


def measure(rcfs: Rcfs, vm: VM, request: pytest.FixtureRequest, setup: str, op: str,
            finish: str) -> Measured:
    """``setup``; ``op`` WARMUP times; the counters; ``op`` REPS times; the counters; ``finish``.

    ``op`` is a shell snippet (``$i`` is the repetition) that prints a
    ``FAIL ...`` line for an operation that did not succeed, as must
    ``setup`` and ``finish``.  The script runs with the console watched (a
    panic, Oops or BUG ends the test at once) and nothing else running in the
    guest, so init_nsproxy is used by the same tasks at both readings.
    """
    count = _address(rcfs.guest.system_map, "init_nsproxy")  # atomic_t count is its first member
    script = f"""
[ -c /dev/kmem ] || mknod /dev/kmem c 1 2
{setup}
i=0; while [ $i -lt {WARMUP} ]; do {op}
i=$((i + 1)); done
echo '{BEFORE}'; {counters_script(count)}
i=0; while [ $i -lt {REPS} ]; do {op}
i=$((i + 1)); done
echo '{AFTER}'; {counters_script(count)}
echo '{END}'
{finish}
"""
    out = run_watched(rcfs, vm, request, script, timeout=600)
    head, _, rest = out.partition(BEFORE + "\n")
    before, _, rest = rest.partition(AFTER + "\n")
    after, _, tail = rest.partition(END + "\n")
    assert before and after, f"the guest script did not read the counters: {out[-2000:]}"
    fails = [line for line in (head + tail).splitlines() if line.startswith("FAIL")]
    return Measured(parse_counters(before), parse_counters(after), fails)


def _address(system_map: Path | None, symbol: str) -> int:
    assert system_map is not None, "the kernel's System.map is not known"
    for line in system_map.read_text().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == symbol:
            return int(fields[0], 16)
    raise AssertionError(f"{symbol} not in {system_map}")


def problems(m: Measured, what: str) -> list[str]:
    """Everything that shows a leak (or a failed operation): empty when there is none."""
    found = list(m.fails[:20])
    assert m.before.active, "no kmalloc cache in /proc/slabinfo"
    grown = {c: m.after.active[c] - m.before.active.get(c, 0) for c in m.after.active
             if m.after.active[c] - m.before.active.get(c, 0) > NOISE}
    if grown:
        callers = [f"{cache} +{n} {func}" for (cache, func), n in
                   (m.after.callers - m.before.callers).most_common() if n >= REPS // 2]
        found.append(f"{REPS} x {what}: kmalloc caches grew beyond the noise ({NOISE}): {grown}; "
                     f"live objects by allocating function: {callers or 'none grew by REPS/2'}")
    if m.after.top_refs != m.before.top_refs:
        found.append(f"{REPS} x {what}: init_nsproxy.count went from {m.before.top_refs} "
                     f"to {m.after.top_refs}")
    return found


# --- the cases ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    what: str
    op: str  # shell: {a} {b} the hierarchies, {m} a mount point, {p} a sleeper's pid
    mounts: tuple[str, ...] = ("all",)  # options of the hierarchies mounted first, as {a} and {b}
    dirs: tuple[str, ...] = ()  # containers made first ({a}/c); removed last, which must succeed
    inside: bool = False  # the script's shell works from {a}/c (its children start there)


# On the posted series the first umount or rmdir of a boot gets a lockdep report (the
# circular dependency of manage_mutex and a directory's i_mutex): every case that removes a
# container or unmounts shows it, and each case after a kernel report gets a new VM.
CASES = {
    "mount-umount": Case(
        "mount and umount of a hierarchy",
        'rcfs-probe mount none {m} rcfs - >/dev/null || echo "FAIL mount $i"; '
        'rcfs-probe umount {m} >/dev/null || echo "FAIL umount $i"',
        mounts=()),
    "tasks-open-close": Case(
        "open, read and close of the tasks files of the top and of an empty container",
        'for f in {a}/tasks {a}/c/tasks; do while read -r x; do :; done < $f || echo "FAIL read $f $i"; '
        'done',
        dirs=("{a}/c",)),
    "mkdir-rmdir": Case(
        "mkdir and rmdir of a container",
        'mkdir {a}/c || echo "FAIL mkdir $i"; rmdir {a}/c || echo "FAIL rmdir $i"'),
    "attach-move-back": Case(
        "attach of a task to a container and back to the top",
        'echo {p} > {a}/c/tasks || echo "FAIL attach $i"; echo {p} > {a}/tasks || echo "FAIL back $i"',
        dirs=("{a}/c",)),
    "attach-two-hierarchies": Case(
        "moves of a task between containers of two hierarchies (a new nsproxy per combination)",
        'for t in {a}/x {b}/y {b} {a}; do echo {p} > $t/tasks || echo "FAIL attach $t $i"; done',
        mounts=("test0", "test1"), dirs=("{a}/x", "{b}/y")),
    # unshare(CLONE_NEWUTS or CLONE_NEWIPC) is EINVAL without CONFIG_UTS_NS/IPC_NS (not set here)
    "unshare-namespaces": Case(
        "unshare(CLONE_NEWNS) by a task in a container, which exits",
        'rcfs-ns unshare ns 1 >/dev/null || echo "FAIL unshare $i"',
        dirs=("{a}/c",), inside=True),
    "clone-new-namespaces": Case(
        "clone(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC) by a task in a container, child exits",
        'rcfs-ns clone ns,uts,ipc 1 >/dev/null || echo "FAIL clone $i"',
        dirs=("{a}/c",), inside=True),
}

_LEFT = "a task that left a container leaves a reference to its nsproxy behind: its rmdir stays EBUSY"
# where the posted patch leaks (or breaks); rcfs-fixes must not
POSTED_BUGS = {
    "mount-umount": "every mount takes a reference to init_nsproxy that nothing drops",
    "mkdir-rmdir": "every container's nsproxy is leaked (size-128, allocated by dup_namespaces)",
    "tasks-open-close": "the first rmdir of a boot takes manage_mutex under the directory's i_mutex, the "
                        "reverse of mount's order: lockdep reports a circular locking dependency",
    "attach-move-back": "each move leaks a reference to the task's old nsproxy (init_nsproxy.count grows); "
                        + _LEFT,
    "attach-two-hierarchies": _LEFT,
    "unshare-namespaces": _LEFT,
    "clone-new-namespaces": "the nsproxy clone() makes is not on the nsproxy list that its exit "
                            "deletes it from: list corruption (BUG)",
}


def _params() -> list[object]:
    return [pytest.param(name, id=name, marks=[pytest.mark.posted_bug(POSTED_BUGS[name])]
                         if name in POSTED_BUGS else []) for name in CASES]


def _script_parts(c: Case, names: dict[str, str]) -> tuple[str, str]:
    """The setup and finish shell of case ``c``."""
    setup = finish = ""
    if c.inside:
        setup = f"echo $$ > {names['a']}/c/tasks || echo 'FAIL self-attach'"
        finish = f"echo $$ > {names['a']}/tasks || echo 'FAIL self-attach to the top'\n"
    if "p" in names:
        finish += f"echo {names['p']} > {names['a']}/tasks; echo {names['p']} > {names['b']}/tasks\n" \
            if "b" in names else f"echo {names['p']} > {names['a']}/tasks\n"
    for d in reversed(c.dirs):
        path = d.format(**names)
        finish += f"rmdir {path} || echo 'FAIL rmdir {path} after the repetitions'\n"
    for key in "ab":
        if key in names:
            finish += (f"rcfs-probe umount {names[key]} >/dev/null || "
                       f"echo 'FAIL umount {names[key]} after the repetitions'\n")
    return setup, finish


@pytest.mark.kernel(config="debug")
@pytest.mark.parametrize("case", _params())
def test_no_leak(case: str, rcfs: Rcfs, kernel_vm: VM, request: pytest.FixtureRequest) -> None:
    c = CASES[case]
    guest = rcfs.guest
    if "rcfs-ns" in c.op:
        assert guest.run("test -x /bin/rcfs-ns").exit_status == 0, (
            "/bin/rcfs-ns is not in the guest image (harness/data/images/rcfs-ns/rcfs-ns.c, "
            "a [[programs]] entry of the image recipe)")
    names = dict(zip("ab", (rcfs.mount(o) for o in c.mounts), strict=False))
    if not c.mounts:  # the case mounts and unmounts itself; cleanup unmounts what it left
        names["m"] = rcfs.new_mountpoint()
        rcfs.mounts.append(Mount(names["m"], None))
    for d in c.dirs:
        rcfs.mkdir(d.format(**names))
    if "{p}" in c.op:
        names["p"] = str(guest.spawn())
    setup, finish = _script_parts(c, names)
    measured = measure(rcfs, kernel_vm, request, setup, c.op.format(**names), finish)
    if measured.fails:  # a busy container may keep an unmounted hierarchy alive: a new VM next
        pool(request.config).discard()
    found = problems(measured, c.what)
    assert found == [], "\n".join(found)
