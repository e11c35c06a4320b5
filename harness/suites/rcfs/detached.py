"""Run a long guest shell script detached from SSH, watching the kernel console meanwhile.

Shared by the concurrency tests (test_stress.py, test_race.py): the script
runs in its own session (``setsid``), so one ``kill -9 -PGID`` stops every
loop it started; the console is checked every second, and at the first
kernel report the script is killed, the VM (in an unknown state) is thrown
away and the test fails at once, instead of waiting for loops that may hang
on a lock an oopsed task held.
"""

from __future__ import annotations

import time

import pytest

from harness.machine.vm import VM
from harness.plugin import CHECKED_KINDS, pool
from harness.plugin.guest import Rcfs

JOB = "/tmp/detached"  # .sh the script, .out its output, .pid its process group, .done when it ended

# $$ of the setsid'd shell is the session and process-group id of everything the script starts
_LAUNCH = (f"setsid sh -c 'echo $$ > {JOB}.pid; sh {JOB}.sh; touch {JOB}.done' "
           f"> {JOB}.out 2>&1 < /dev/null &")


def run_detached(rcfs: Rcfs, vm: VM, request: pytest.FixtureRequest, script: str,
                 limit: int) -> str:
    """Run ``script`` in the guest; its output (stdout and stderr) once it has ended.

    ``limit`` is a number of seconds after which a script that has not ended is
    killed and the test fails (a hang, not a time the test asserts).
    """
    guest = rcfs.guest
    mark = vm.mark()
    guest.sh(f"rm -f {JOB}.*")
    guest.run(f"cat > {JOB}.sh", input=script)
    guest.sh(_LAUNCH)
    for _ in range(limit):
        events = [e for e in vm.events_since(mark) if e.kind in CHECKED_KINDS]
        if events:
            guest.run(f"kill -9 -$(cat {JOB}.pid); touch {JOB}.done", timeout=10)
            rcfs.mounts.clear()
            pool(request.config).discard()
            pytest.fail(f"kernel reported {len(events)} problem(s), first: {events[0]}")
        if guest.run(f"test -e {JOB}.done").exit_status == 0:
            return guest.read(f"{JOB}.out")
        time.sleep(1)
    guest.run(f"kill -9 -$(cat {JOB}.pid)", timeout=10)
    pytest.fail(f"the guest script did not end in {limit} s: "
                f"{guest.run(f'cat {JOB}.out').stdout[-2000:]}")
