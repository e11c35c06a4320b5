"""Run a long guest shell script while watching the kernel console for a kernel report.

At the first report of a crash or a warning (panic, Oops, BUG, warning:
``STOP_KINDS``) the VM, in an unknown state, is thrown away and the test
fails at once, instead of waiting for a script that may hang on a lock the
dead task held.  A lockdep report does not stop the script (it is a possible
deadlock, and comes at the first rmdir of every fresh debug VM of the posted
patch): the test goes on to its own finding, and the plugin fails it for the
report afterwards all the same.

* :func:`run_detached` (test_stress.py, test_race.py): the script runs in
  its own session (``setsid``), so one ``kill -9 -PGID`` stops every loop
  it started; the guest is asked every second whether it has ended.
* :func:`run_watched` (test_leaks.py): the script runs as one SSH command
  and nothing else runs in the guest meanwhile (no polling command), so
  the guest's task set is the script's own: counters that depend on which
  tasks exist stay exact.
"""

from __future__ import annotations

import threading
import time

import pytest

from harness.machine.ssh import CommandResult
from harness.machine.vm import VM
from harness.plugin import STOP_KINDS, pool
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
        events = [e for e in vm.events_since(mark) if e.kind in STOP_KINDS]
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


def run_watched(rcfs: Rcfs, vm: VM, request: pytest.FixtureRequest, script: str,
                timeout: float) -> str:
    """Run ``script`` as one guest command; its standard output.

    The command runs in a thread while this one watches the console; a
    command still running after ``timeout`` seconds is an error of the
    guest command (as for any command).
    """
    mark = vm.mark()
    outcome: list[CommandResult | BaseException] = []

    def work() -> None:
        try:
            outcome.append(rcfs.guest.run(script, timeout=timeout))
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=work, name="guest-script", daemon=True)
    worker.start()
    while worker.is_alive():
        events = [e for e in vm.events_since(mark) if e.kind in STOP_KINDS]
        if events:
            rcfs.mounts.clear()
            pool(request.config).discard()  # stops QEMU: the command ends with an error
            worker.join(timeout=30)
            pytest.fail(f"kernel reported {len(events)} problem(s), first: {events[0]}")
        worker.join(timeout=0.2)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result.stdout
