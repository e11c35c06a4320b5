"""Allocation failures on the patch's paths: each slab allocation of each operation fails once, in turn.

For each operation (mkdir, mount, tasks open, an attach that finds its
nsproxy, an attach that needs a new one, clone and unshare of namespaces by
a task in a container) the test fails allocation N = 1, 2, ... of the one
system call, counting every slab allocation the calling process makes
(``failslab.py`` says how), and fails it only if it was made from within
the operation's rcfs (or nsproxy) function; it stops at the first N beyond
the number of allocations the call made, so that none is skipped.  After
every call:

* a call whose allocation failed returns ENOMEM and leaves everything as it
  was (mounts, containers, their files and tasks); one that succeeds,
  failure or not, leaves exactly what a call without failures leaves;
* the kernel reported nothing (Oops, BUG, lockdep; slab poison and red-zone
  reports, which the plugin does not look for, are checked here);
* undoing a successful call (rmdir, umount, moving the task back) restores
  the state before it.

Then each N that failed an allocation is repeated ``LEAK_REPS`` times
between two readings of the kernel's counters (``test_leaks.py``): no
kmalloc cache may grow beyond its noise, no allocating function's live
objects by ``LEAK_REPS / 2``, and init_nsproxy's reference count not at all.
Last, every container the test made is removed and every hierarchy
unmounted, and the subsystems must then be free (a leaked reference keeps
an rmdir or a mount busy).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from harness.machine.vm import VM
from harness.plugin import CHECKED_KINDS
from harness.plugin.guest import PROBE, GuestSession, Mount, ProbeResult, Rcfs, parse_probe
from harness.suites.rcfs.failslab import (
    SLAB_REPORT,
    FailSlab,
    Injection,
    injected_chains,
    parse_injection,
    site,
)
from harness.suites.rcfs.test_leaks import NOISE, Counters, counters_script, parse_counters

FAULTS = pytest.mark.kernel(config="faults")
MAX_ALLOCATIONS = 400  # a call that makes more is reported (a runaway sweep, not a limit on rcfs)
LEAK_REPS = 20  # each failing N again, between the two readings of the counters
CALL_TIMEOUT = 30  # seconds for one call and its checks (a call blocked on a lock an oops held)


@dataclass(frozen=True)
class Op:
    """One operation: its call (rcfs-probe arguments), where failures may come from, how to undo it."""

    function: str  # only allocations made from within this function fail
    call: str  # rcfs-probe OP ARGS; {a} {b} the hierarchies, {m} a mount point, {p} the sleeper
    undo: str = ""  # shell after a successful call, back to the state before it
    mounts: tuple[str, ...] = ("all",)  # mounted first as {a}, {b}
    dirs: tuple[str, ...] = ()  # made first
    sleeper: str | None = None  # a sleeping task {p} is put in this container first
    inside: str | None = None  # the call runs in a task attached to this container
    mountpoint: bool = False  # {m}: an empty mount point, unmounted at cleanup
    reject: str | None = None  # allocations made from within this function never fail


OPS = {
    "mkdir": Op("rcfs_mkdir", "mkdir {a}/new", undo="rmdir {a}/new"),
    # set_anon_super(): when it fails, 2.6.20's sget() frees the new superblock with its s_umount
    # held ("BUG: held lock freed!" from lockdep), a bug of the VFS, not of rcfs
    "mount": Op("rcfs_get_sb", "mount none {m} rcfs test0,test1", undo=f"{PROBE} umount {{m}} >/dev/null",
                mounts=(), mountpoint=True, reject="set_anon_super"),
    "tasks-open": Op("rcfs_tasks_open", "read {a}/c/tasks", dirs=("{a}/c",), sleeper="{a}/c"),
    "attach": Op("rcfs_common_file_write", "-e write {a}/c/tasks {p}", undo="echo {p} > {a}/tasks",
                 dirs=("{a}/c",), sleeper="{a}"),
    "attach-new-nsproxy": Op("rcfs_common_file_write", "-e write {b}/y/tasks {p}",
                             undo="echo {p} > {b}/tasks", mounts=("test0", "test1"),
                             dirs=("{a}/x", "{b}/y"), sleeper="{a}/x"),
    "clone": Op("copy_namespaces", "clone ns", dirs=("{a}/c",), inside="{a}/c"),
    "unshare": Op("sys_unshare", "unshare ns", dirs=("{a}/c",), inside="{a}/c"),
}

_NULL = "dup_namespaces() puts the nsproxy it failed to allocate (NULL) on the nsproxy list: Oops"
_MOVES = ("each move of the sleeper between containers leaks a reference to its old nsproxy, so its "
          "container's rmdir stays EBUSY afterwards")
# where the posted patch breaks (rcfs-fixes must not)
POSTED_BUGS = {
    "mkdir": f"{_NULL}; and a mkdir whose files cannot all be made succeeds with a half-filled container",
    "mount": "a mount whose top directory's files cannot all be made succeeds, leaving a hierarchy "
             "without its tasks file",
    "tasks-open": _MOVES,
    "attach": _MOVES,
    "attach-new-nsproxy": f"{_MOVES}; the nsproxy the first move made then outlives the move back, so the "
                          "later moves need no new one",
    "clone": "the nsproxy clone() makes is not on the nsproxy list that its exit deletes it from: "
             "list corruption (BUG)",
    "unshare": _NULL,
}


@dataclass
class Call:
    """One call of the operation and the states around it."""

    result: ProbeResult
    injection: Injection | None
    after: list[str]  # the state after the call
    undone: list[str]  # ... and after undoing it (when it succeeded)
    console: str = ""


@dataclass
class Sweep:
    op: Op
    names: dict[str, str]
    tops: list[str]
    failed: dict[int, str] = field(default_factory=dict)  # N -> the failed allocation's call chain


@pytest.fixture
def failslab(guest: GuestSession) -> Iterator[FailSlab]:
    """Fails one chosen slab allocation of one rcfs-probe call (see failslab.py); disarmed after."""
    fs = FailSlab(guest)
    yield fs
    if guest.vm.alive() and not guest.vm.crashed():  # a crashed VM is replaced: nothing to disarm
        fs.disarm()


def _state_script(tops: list[str]) -> str:
    """Shell printing the rcfs mounts, every file under each top, and the tasks of each container
    below a top (a top lists every task of the guest, the ssh sessions' included)."""
    return (f"grep ' rcfs ' /proc/mounts; for t in {' '.join(tops)}; do find $t | while read -r f; do "
            'echo "F $f"; [ "$f" != "$t" ] && [ -f "$f/tasks" ] && echo "T $f" $(cat "$f/tasks"); '
            "done; done; true")


def _command(sweep: Sweep, nth: int | None, fs: FailSlab) -> str:
    args = shlex.split(sweep.op.call.format(**sweep.names))
    argv = fs.probe_argv(nth, *args) if nth is not None else [PROBE, *args]
    cmd = shlex.join(argv)
    if sweep.op.inside:  # exec: the probe is the task in the container
        where = shlex.quote(sweep.op.inside.format(**sweep.names) + "/tasks")
        cmd = f"sh -c {shlex.quote(f'echo $$ > {where} && exec {cmd}')}"
    return cmd


def _call(guest: GuestSession, sweep: Sweep, fs: FailSlab, nth: int | None) -> Call:
    vm = guest.vm
    mark = vm.mark()
    state = _state_script(sweep.tops)
    undo = sweep.op.undo.format(**sweep.names) or "true"
    out = guest.run(f"{_command(sweep, nth, fs)}; s=$?\necho \"=== status $s\"\n{state}\n"
                    f"echo '=== undone'\nif [ $s -eq 0 ]; then {undo}; fi\n{state}\n", timeout=CALL_TIMEOUT)
    probe_out, _, rest = out.stdout.partition("=== status ")
    status, _, rest = rest.partition("\n")
    after, _, undone = rest.partition("=== undone\n")
    assert status.isdigit(), f"the guest script did not finish: {out.stdout[-2000:]} {out.stderr}"
    result = parse_probe(probe_out, int(status))
    vm.sync_console()
    return Call(result, parse_injection(result) if nth is not None else None,
                sorted(after.splitlines()), sorted(undone.splitlines()), vm.console_since(mark))


def _health(vm: VM, mark: int, what: str) -> None:
    """The kernel printed no report since ``mark``."""
    vm.sync_console()
    events = [e for e in vm.events_since(mark) if e.kind in CHECKED_KINDS]
    slab = [line for line in vm.console_since(mark).splitlines() if SLAB_REPORT.search(line)]
    assert not events and not slab, (
        f"{what}: the kernel reported {events[0] if events else slab[0]}\n"
        + (events[0].excerpt if events else "\n".join(slab[:10])))


def _diff(expected: list[str], got: list[str]) -> str:
    gone, new = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    return f"missing {gone[:12]}, unexpected {new[:12]}"


def _setup(rcfs: Rcfs, op: Op) -> Sweep:
    guest = rcfs.guest
    names = dict(zip("ab", (rcfs.mount(o) for o in op.mounts), strict=False))
    tops = list(names.values())
    if op.mountpoint:
        names["m"] = rcfs.new_mountpoint()
        rcfs.mounts.append(Mount(names["m"], None))  # cleanup unmounts it if the test leaves it mounted
        tops.append(names["m"])
    for d in op.dirs:
        rcfs.mkdir(d.format(**names))
    if op.sleeper:
        names["p"] = str(guest.spawn())
        result = rcfs.attach(op.sleeper.format(**names), names["p"])
        assert result.ok, f"attach the sleeper to {op.sleeper.format(**names)}: {result}"
    return Sweep(op, names, tops)


def _sweep(guest: GuestSession, fs: FailSlab, sweep: Sweep) -> None:
    """Fail allocation N = 1, 2, ... until the call makes fewer than N; check every call."""
    vm = guest.vm
    before = sorted(guest.sh(_state_script(sweep.tops)).splitlines())
    clean = _call(guest, sweep, fs, None)  # also warms the caches (a dentry left by a lookup)
    assert clean.result.ok, f"{sweep.op.call} without failures: {clean.result}"
    assert clean.undone == before, f"undo ({sweep.op.undo}) did not restore: {_diff(before, clean.undone)}"
    done = clean.after
    for nth in range(1, MAX_ALLOCATIONS + 1):
        mark = vm.mark()
        call = _call(guest, sweep, fs, nth)
        inj = call.injection
        assert inj is not None
        chains = injected_chains(call.console)
        where = site(chains[0], sweep.op.function) if chains else "?"
        what = f"allocation {nth} ({where})" if inj.injected else f"allocation {nth} (not failed)"
        _health(vm, mark, f"{sweep.op.call}, {what}")
        if inj.injected:
            sweep.failed[nth] = where
            if call.result.ok:
                assert call.after == done, (
                    f"{what} failed, yet {sweep.op.call} succeeded, leaving what a success does not: "
                    f"{_diff(done, call.after)}")
            else:
                assert call.result.errno == "ENOMEM", f"{what} failed: {call.result}, expected ENOMEM"
                assert call.after == before, (f"{what} failed: {call.result}, but the state changed: "
                                              f"{_diff(before, call.after)}")
        else:
            assert call.result.ok, f"no allocation failed at N={nth}, yet: {call.result}"
            assert call.after == done, f"{sweep.op.call}: {_diff(done, call.after)}"
        assert call.undone == before, f"after {what}, undo did not restore: {_diff(before, call.undone)}"
        if not inj.injected and inj.allocations < nth:
            break
    else:
        pytest.fail(f"{sweep.op.call} made more than {MAX_ALLOCATIONS} allocations")
    assert sweep.failed, f"no allocation made from within {sweep.op.function} failed: wrong function?"


def _leak_script(sweep: Sweep, fs: FailSlab) -> str:
    """Each N that failed, LEAK_REPS times (undoing a call that succeeded), in one shell."""
    undo = sweep.op.undo.format(**sweep.names) or "true"
    lines = []
    for nth in sweep.failed:
        lines.append(f"i=0; while [ $i -lt {LEAK_REPS} ]; do {_command(sweep, nth, fs)} >/dev/null "
                     f"&& {{ {undo}; }}; i=$((i + 1)); done")
    return "\n".join(lines)


def _leaks(guest: GuestSession, fs: FailSlab, sweep: Sweep) -> tuple[Counters, Counters]:
    """The kernel's counters before and after each failing N was repeated LEAK_REPS times."""
    top_count = fs.address("init_nsproxy")  # its atomic_t count comes first
    read = counters_script(top_count)
    out = guest.sh(f"{read}\necho '=== repeat'\n{_leak_script(sweep, fs)}\necho '=== after'\n{read}",
                   timeout=600)
    first, _, rest = out.partition("=== repeat\n")
    _, _, second = rest.partition("=== after\n")
    return parse_counters(first), parse_counters(second)


def largest_changes(before: Counters, after: Counters) -> str:
    """The largest change of a kmalloc cache and of an allocating function's live objects."""
    caches = [(n - before.active.get(c, 0), c) for c, n in after.active.items()]
    funcs = [(after.callers[k] - before.callers[k], f"{k[0]} {k[1]}")
             for k in set(after.callers) | set(before.callers)]
    cache = max(caches, key=lambda x: abs(x[0]), default=(0, "-"))
    func = max(funcs, key=lambda x: abs(x[0]), default=(0, "-"))
    return (f"kmalloc cache {cache[1]} {cache[0]:+d}; function {func[1]} {func[0]:+d}; "
            f"init_nsproxy.count {after.top_refs - before.top_refs:+d}")


def leak_problems(before: Counters, after: Counters, failing: int) -> list[str]:
    """What shows a leak after ``LEAK_REPS`` runs of each of ``failing`` failing calls."""
    found = []
    grown = {c: n - before.active.get(c, 0) for c, n in after.active.items()
             if n - before.active.get(c, 0) > NOISE}
    callers = [f"{cache} +{n} {func}" for (cache, func), n in (after.callers - before.callers).most_common()
               if n >= LEAK_REPS // 2]
    if grown or callers:
        found.append(f"{LEAK_REPS} runs of each of the {failing} failing allocations: kmalloc caches grew "
                     f"beyond the noise ({NOISE}): {grown}; live objects by allocating function grew: "
                     f"{callers or 'none by LEAK_REPS/2'}")
    if after.top_refs != before.top_refs:
        found.append(f"init_nsproxy.count went from {before.top_refs} to {after.top_refs}")
    return found


def _params() -> list[object]:
    return [pytest.param(name, id=name, marks=[pytest.mark.posted_bug(POSTED_BUGS[name])]
                         if name in POSTED_BUGS else []) for name in OPS]


@FAULTS
@pytest.mark.parametrize("op", _params())
def test_every_allocation_failure(op: str, rcfs: Rcfs, failslab: FailSlab,
                                  request: pytest.FixtureRequest) -> None:
    """Each allocation of the operation, failed in turn: ENOMEM, nothing changed, healthy, no leak."""
    props = request.node.user_properties  # in the results' records (the junit is xunit2)
    sweep = _setup(rcfs, OPS[op])
    failslab.arm(sweep.op.function, sweep.op.reject)
    try:
        _sweep(rcfs.guest, failslab, sweep)
    finally:
        props.append(("failed_allocations", "; ".join(f"{n}: {w}" for n, w in sweep.failed.items())))
    before, after = _leaks(rcfs.guest, failslab, sweep)
    props.append(("leak_check", largest_changes(before, after)))
    leaks = leak_problems(before, after, len(sweep.failed))
    assert leaks == [], "\n".join(leaks)
    # a reference leaked to a container keeps its rmdir busy, one to a hierarchy its subsystems
    problems = rcfs.cleanup()
    rcfs.guest.discard_vm = bool(problems)  # the next test must not inherit what is left
    assert problems == [], f"removing the containers and hierarchies afterwards: {problems}"
