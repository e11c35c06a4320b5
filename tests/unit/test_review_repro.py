"""Reproducer scripts from recorded traces, run by the host's POSIX sh against stub guest commands
(rcfs-probe, dmesg, mkdir... are small scripts in a tmp dir on PATH; nothing outside tmp dirs)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import SessionRecords
from harness.results.guestlog import GuestCommand, TestTrace
from harness.review import repro

DATA = Path(__file__).resolve().parent.parent / "data" / "review"
SH = shutil.which("sh") or "/bin/sh"


@pytest.fixture(scope="module")
def traces() -> dict[str, TestTrace]:
    return SessionRecords.load(DATA / "records-testss.json").traces


class Guest:
    """A stub guest: ``probe_out`` maps an rcfs-probe op to (output, status); every rcfs-probe call
    is logged; ``kernel_log`` is what dmesg shows once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.log = tmp / "probe.log"
        self.probe_out: dict[str, tuple[str, int]] = {}
        self.probe_klog: dict[str, str] = {}  # what the kernel logs when rcfs-probe makes that op
        for name, body in {
            "mkdir": "exit 0", "sleep": "exit 0", "usleep": "exit 0", "nohup": 'exec "$@"',
            "dmesg": f'[ -f "{tmp}/klog" ] && cat "{tmp}/klog"; rm -f "{tmp}/klog"; exit 0',
        }.items():
            self._stub(name, body)

    def _stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!{SH}\n{body}\n")
        path.chmod(0o755)

    def run(self, text: str) -> tuple[int, str]:
        klog = {op: f"printf '%s\\n' {repro.sq(text)} >> \"{self.tmp}/klog\"; "
                for op, text in self.probe_klog.items()}
        cases = "\n".join(f"  {op}) {klog.get(op, '')}printf '%s\\n' {repro.sq(out)}; exit {rc};;"
                          for op, (out, rc) in self.probe_out.items())
        skip_options = 'while [ "${1#-}" != "$1" ]; do case $1 in -[ugnftm]) shift;; esac; shift; done'
        self._stub("rcfs-probe", f'echo "$*" >> "{self.log}"\n{skip_options}\n'
                                 f'case $1 in\n{cases}\n  *) echo "$1: OK"; exit 0;;\nesac')
        env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "TMPDIR": str(self.tmp)}
        done = subprocess.run([SH, "-s"], input=text, capture_output=True, text=True, env=env,
                              timeout=60, check=False)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return Guest(tmp_path)


def test_a_wrong_errno_shows_and_the_right_one_does_not(traces: dict[str, TestTrace], guest: Guest) -> None:
    text = repro.script(traces["test_tasks.py::test_non_numeric_write_is_einval[abc]"])
    guest.probe_out["write"] = ("open: OK\nwrite: EIO\nclose: OK", 1)
    code, out = guest.run(text)
    assert code == 1 and "BUG SHOWN: step 4 gave what the test rejected" in out
    guest.probe_out["write"] = ("open: OK\nwrite: EINVAL\nclose: OK", 1)  # the fixed kernel
    code, out = guest.run(text)
    assert code == 0 and "not reproduced" in out
    assert guest.log.read_text().splitlines() == ["mount none /mnt/rcfs1 rcfs -", "mkdir /mnt/rcfs1/c",
                                                  "-e write /mnt/rcfs1/c/tasks abc"] * 2


def test_a_kernel_report_shows_whatever_the_commands_gave(traces: dict[str, TestTrace],
                                                         guest: Guest) -> None:
    text = repro.script(traces["test_tasks.py::test_non_numeric_write_is_einval[abc]"])
    guest.probe_out["mkdir"] = ("mkdir: OK", 0)
    guest.probe_klog["mkdir"] = "attaching task 183\nBUG: at kernel/fork.c:117 __put_task_struct()"
    code, out = guest.run(text)
    assert code == 1 and "BUG SHOWN: the kernel reported a problem after step 3" in out
    assert "__put_task_struct" in out
    assert len(guest.log.read_text().splitlines()) == 2  # it stopped there


def test_the_pid_of_a_spawned_process_is_the_script_s_own(traces: dict[str, TestTrace],
                                                          guest: Guest) -> None:
    trace = traces["test_rmdir.py::test_rmdir_after_task_moved_out[top]"]
    spawned = next(c.pid for c in trace.commands if c.kind == "spawn")
    text = repro.script(trace)
    commands = [line for line in text.splitlines() if not line.startswith("#")]
    assert '( rcfs-probe -e write /mnt/rcfs1/c/tasks "${P1}" )' in commands
    assert not [line for line in commands if str(spawned) in line]
    guest.probe_out["rmdir"] = ("rmdir: EBUSY", 1)
    code, out = guest.run(text)
    assert code == 1 and "step 9 gave what the test rejected" in out
    pid = next(line.split("=")[1] for line in out.splitlines() if line.startswith("P1="))
    writes = [line for line in guest.log.read_text().splitlines() if line.startswith("-e write")]
    assert writes == [f"-e write /mnt/rcfs1/c/tasks {pid}", f"-e write /mnt/rcfs1/tasks {pid}"]


def test_substitute_quotes_the_variable_for_where_it_stands() -> None:
    pids = {183: "P1"}
    assert repro.substitute("kill -9 183; echo 1830", pids) == 'kill -9 "${P1}"; echo 1830'
    assert repro.substitute("sh -c 'kill 183' \"/proc/183\"", pids) == \
        "sh -c 'kill '\"${P1}\"'' \"/proc/${P1}\""


def test_output_with_quotes_and_dollars_is_compared_exactly(guest: Guest) -> None:
    tricky = "a \"b\" $HOME `x` \\n 77"
    trace = TestTrace("t.py::f", commands=[
        GuestCommand("spawn", "nohup sleep 1 >/dev/null 2>&1 </dev/null & echo $!", exit_status=0,
                     stdout="77\n", pid=77),
        GuestCommand("probe", "rcfs-probe read /x 77", exit_status=0, stdout=tricky + "\n")],
        failed_phase="call", failed_after=2)
    text = repro.script(trace)
    guest.probe_out["read"] = (tricky.replace("77", "${P1}"), 0)  # the stub prints it literally
    assert guest.run(text)[0] == 0  # P1 is not 77 here and the stub did not expand it
    # now the stub prints the pid it is given (the script's own) where the test saw 77
    guest._stub("rcfs-probe", 'printf \'%s\\n\' "a \\"b\\" \\$HOME \\`x\\` \\\\n $3"')
    done = subprocess.run([SH, "-s"], input=text, capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": f"{guest.bin}:{os.environ['PATH']}", "TMPDIR": str(guest.tmp)})
    assert done.returncode == 1, done.stdout


def test_a_poll_is_one_loop_waiting_for_the_last_result(guest: Guest) -> None:
    poll = [GuestCommand("run", "probe-done", exit_status=1, gap=1.0) for _ in range(5)]
    poll.append(GuestCommand("run", "probe-done", exit_status=0, gap=1.0))
    trace = TestTrace("t.py::f", commands=[*poll, GuestCommand("probe", "rcfs-probe rmdir /d", exit_status=1,
                                                               stdout="rmdir: EBUSY\n")],
                      failed_phase="call", failed_after=7)
    steps = repro.steps_of(trace)
    assert [(s.number, s.repeat, s.command.exit_status) for s in steps] == [(1, 6, 0), (2, 1, 1)]
    counter = guest.tmp / "polls"
    guest._stub("probe-done", f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n + 1)); '
                              f'echo $n > "{counter}"; [ $n -ge 3 ]')
    guest.probe_out["rmdir"] = ("rmdir: EBUSY", 1)
    code, _ = guest.run(repro.script(trace))
    assert code == 1 and counter.read_text().strip() == "3"  # polled until it gave 0, then on


def test_a_step_that_never_returned_is_checked_for_hanging(guest: Guest) -> None:
    pidfile = guest.tmp / "hung.pid"
    guest._stub("hangs", f'echo $$ > "{pidfile}"; exec /bin/sleep 120')
    trace = TestTrace("t.py::f", commands=[GuestCommand("run", "hangs", error="timed out after 60s")],
                      failed_phase="call", failed_after=1)
    try:
        code, out = guest.run(repro.script(trace, hang_seconds=2))
        assert code == 1 and "BUG SHOWN: step 1 still blocked" in out
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    guest._stub("hangs", "exit 0")
    code, out = guest.run(repro.script(trace, hang_seconds=2))
    assert code == 0


def test_commands_of_other_users_and_teardown() -> None:
    trace = TestTrace("t.py::f", commands=[
        GuestCommand("probe", "rcfs-probe -e write /m/tasks 5", user="alice", exit_status=1,
                     stdout="open: EACCES\n"),
        GuestCommand("run", "id -u", user="bob", exit_status=0, stdout="1001\n"),
        GuestCommand("run", "rcfs-probe cleanup /m", phase="teardown", exit_status=1, stdout="PROBLEM x\n")],
        failed_phase="call", failed_after=3)
    text = repro.script(trace)
    assert "( rcfs-probe -u 1000 -e write /m/tasks 5 )" in text  # root switches uid for the probe
    assert "ran as bob in the test; this script runs it as root" in text
    assert "cleanup" not in text  # the test failed in its call: teardown is not replayed


def test_a_long_output_judged_on_the_host_cannot_be_told(guest: Guest) -> None:
    report = "".join(f"slab-{n} {n * 7}\n" for n in range(repro.MAX_COMPARED_LINES + 1))
    trace = TestTrace("t.py::f", commands=[GuestCommand("run", "rcfs-probe read /proc/slabinfo",
                                                        exit_status=0, stdout=report)],
                      failed_phase="call", failed_after=1)
    text = repro.script(trace, assertion="assert grown == {}")
    assert "# The test asserts: assert grown == {}" in text
    guest.probe_out["read"] = (report, 0)
    code, out = guest.run(text)
    assert code == 2 and "cannot tell: the test judged the output of step 1 on the host" in out
    guest.probe_klog["read"] = "BUG: at mm/slab.c:1 x()"
    assert guest.run(text)[0] == 1  # a kernel report still tells


def test_a_test_failed_by_a_kernel_report_is_judged_by_the_kernel_log_only(guest: Guest) -> None:
    trace = TestTrace("t.py::f", commands=[GuestCommand("probe", "rcfs-probe rmdir /m/c", phase="teardown",
                                                        exit_status=0, stdout="rmdir: OK\n")],
                      failed_phase="teardown", failed_after=1, kernel_report=True)
    text = repro.script(trace)
    guest.probe_out["rmdir"] = ("rmdir: OK", 0)  # the same output: it was never the point
    assert guest.run(text)[0] == 0
    guest.probe_klog["rmdir"] = "[ INFO: possible circular locking dependency detected ]"
    assert guest.run(text)[0] == 1


def test_a_test_that_failed_on_its_own_beside_a_kernel_report_is_judged_by_its_output(guest: Guest) -> None:
    """A leak test on the posted debug kernel: lockdep reported at the first rmdir, and the test then
    failed at its own line on the counters it read: the output is still what tells."""
    report = "".join(f"slab-{n} {n * 7}\n" for n in range(repro.MAX_COMPARED_LINES + 1))
    read = GuestCommand("run", "rcfs-probe read /proc/slabinfo", exit_status=0, stdout=report, line=12)
    trace = TestTrace("t.py::f", commands=[read],
                      failed_phase="call", failed_after=1, kernel_report=True, failed_line=14)
    guest.probe_out["read"] = (report, 0)
    code, out = guest.run(repro.script(trace))
    assert code == 2 and "cannot tell: the test judged the output of step 1 on the host" in out


def test_harness_repro_prints_the_script_of_a_recorded_test(tmp_path: Path) -> None:
    cell = tmp_path / "cells" / "rcfs-testss-default"
    cell.mkdir(parents=True)
    shutil.copy(DATA / "records-testss.json", cell / "records.json")
    done = subprocess.run([sys.executable, "-m", "harness", "repro", "--from", str(tmp_path),
                           "tests/rcfs/test_tasks.py::test_non_numeric_write_is_einval[abc]"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "#!/bin/sh\n# Reproducer of test_tasks.py::test_non_numeric_write_is_einval[abc]")
    assert "out=$( ( rcfs-probe -e write /mnt/rcfs1/c/tasks abc ) 2>/dev/null ); rc=$?" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "harness", "repro", "--from", str(tmp_path),
                              "t.py::nope"], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "no recorded test 't.py::nope'" in missing.stderr


def test_a_poll_the_test_gave_up_is_replayed_as_long_watching_the_kernel(guest: Guest) -> None:
    poll = [GuestCommand("run", "probe-done", exit_status=1, gap=1.0) for _ in range(4)]
    trace = TestTrace("t.py::f", commands=[*poll, GuestCommand("run", "probe-kill", exit_status=0)],
                      failed_phase="call", failed_after=5, kernel_report=True)
    assert [(s.repeat, s.polled) for s in repro.steps_of(trace)] == [(4, 1), (1, None)]
    counter = guest.tmp / "polls"
    guest._stub("probe-done", f'n=$(cat "{counter}" 2>/dev/null || echo 0); echo $((n + 1)) > "{counter}"; '
                              'exit 1')
    guest._stub("probe-kill", "exit 0")
    assert guest.run(repro.script(trace))[0] == 0 and counter.read_text().strip() == "4"
    counter.unlink()
    guest._stub("probe-done", f'n=$(cat "{counter}" 2>/dev/null || echo 0); echo $((n + 1)) > "{counter}"; '
                              f'[ $n = 1 ] && echo "BUG: at kernel/fork.c:117" >> "{guest.tmp}/klog"; exit 1')
    code, out = guest.run(repro.script(trace))
    assert code == 1 and "after step 1" in out and counter.read_text().strip() == "2"
