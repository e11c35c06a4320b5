"""The mkdir/attach race: a task attached to a container must never land in a container being made.

rcfs represents a container by an nsproxy, and an attach looks for an
nsproxy with the target's state (``find_nsproxy()``, under ``manage_mutex``).
``rcfs_create()`` (mkdir) made the new container's nsproxy with
``dup_namespaces(parent)``, which puts it on that list as an exact copy of
the parent, *before* taking ``manage_mutex`` and letting the subsystems'
``create()`` give it its own state.  An attach to the parent that ran in
between (mkdir waits for ``manage_mutex`` while an attach holds it) got the
new container's nsproxy: the task ended up in the new container, whose
rmdir then failed with EBUSY.  This is what the stress test saw with
HZ=1000 ("the first rmdir of the mkdir/rmdir loop returns EBUSY").

The test keeps ``manage_mutex`` busy with two loops moving sleepers between
``s1`` and the top (every attach holds it through ``synchronize_rcu()``),
while a third makes and removes containers under the top; nobody ever
attaches a task to those.  Each new container must list no task, and its
rmdir must succeed.
"""

from __future__ import annotations

import re

import pytest

from harness.machine.vm import VM
from harness.plugin.guest import Rcfs
from harness.suites.rcfs.detached import run_detached

MKDIRS = 300  # containers made and removed while the attaches run (a count, not a time)

RACE = r"""
top={top}
S1=""; S2=""
for i in 1 2 3; do sleep 100000 </dev/null >/dev/null 2>&1 & S1="$S1 $!"; done
for i in 1 2 3; do sleep 100000 </dev/null >/dev/null 2>&1 & S2="$S2 $!"; done

attacher() {{  # $1: sleepers, $2: its name; moves them between s1 and the top until told to stop
    n=0
    while [ ! -e /tmp/race.stop ]; do
        for p in $1; do
            echo $p > $top/s1/tasks || echo "FAIL move $p to s1"
            echo $p > $top/tasks || echo "FAIL move $p to the top"
        done
        n=$((n + 1))
        touch /tmp/race.$2
    done
    echo "attacher $n"
}}

rm -f /tmp/race.*
attacher "$S1" a1 & A1=$!
attacher "$S2" a2 & A2=$!
# both attachers have made a round before the first mkdir, and go on until the last rmdir
while [ ! -e /tmp/race.a1 ] || [ ! -e /tmp/race.a2 ]; do usleep 10000; done

n=0
while [ $n -lt {mkdirs} ]; do
    d=$top/r$n
    mkdir $d || {{ echo "FAIL mkdir $d"; break; }}
    t=""
    while read -r x; do t="$t $x"; done < $d/tasks
    [ -z "$t" ] || echo "FAIL new container $d lists task(s)$t, which nobody attached to it"
    if ! rmdir $d 2>/dev/null; then
        echo "FAIL rmdir $d (tasks:$t)"
        while read -r x; do echo $x > $top/tasks; done < $d/tasks
        rmdir $d || echo "FAIL rmdir $d after moving its tasks to the top"
    fi
    n=$((n + 1))
done
touch /tmp/race.stop
wait $A1 $A2
echo "mkdirs $n"
for p in $S1 $S2; do echo $p > $top/tasks || echo "FAIL final move $p"; done
{{ kill -9 $S1 $S2; wait $S1 $S2; }} >/dev/null 2>&1
rm -f /tmp/race.*
echo end
"""

SUMMARY = re.compile(r"attacher ([0-9]+)|mkdirs ([0-9]+)|end")


@pytest.mark.parametrize("kernel", [pytest.param(name, marks=pytest.mark.kernel(config=name), id=name)
                                    for name in ("debug", "debug-smp")])
@pytest.mark.posted_bug("mkdir puts the new container's nsproxy, a copy of the parent's, where attach "
                        "finds it before the subsystems give it its own state: a task attached to the "
                        "parent lands in the new container, whose rmdir fails with EBUSY")
def test_attach_to_parent_never_lands_in_new_container(kernel: str, rcfs: Rcfs, kernel_vm: VM,
                                                       request: pytest.FixtureRequest) -> None:
    top = rcfs.mount()
    rcfs.mkdir(f"{top}/s1")
    out = run_detached(rcfs, kernel_vm, request, RACE.format(top=top, mkdirs=MKDIRS),
                       limit=30 + MKDIRS)
    lines = out.splitlines()
    problems = [line for line in lines if not SUMMARY.fullmatch(line)]
    assert problems == [], f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    assert lines[-1:] == ["end"], out[-2000:]
    matches = [m for m in map(SUMMARY.fullmatch, lines) if m]
    assert [int(m.group(2)) for m in matches if m.group(2)] == [MKDIRS], out
    # both attachers made rounds during the mkdirs: they started before the first, stopped after the last
    rounds = [int(m.group(1)) for m in matches if m.group(1)]
    assert len(rounds) == 2 and min(rounds) > 0, out
    assert rcfs.containers(top) == [f"{top}/s1"]
