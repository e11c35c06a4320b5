"""The guest API records every command a test sends; the records carry traces and VM waiting time."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from harness.errors import InfraError
from harness.machine.ssh import CommandFailed, CommandResult
from harness.plugin import kernels
from harness.plugin.guest import GuestSession, Rcfs
from harness.plugin.recorder import MAX_COMMANDS, Recorder
from harness.results import KernelRun, SessionRecords
from harness.results.guestlog import MAX_OUTPUT, GuestCommand, TestTrace
from harness.run import target
from harness.run.target import KernelSpec


class FakeVM:
    """Answers commands from a list of (exit status, stdout); raises an InfraError when told."""

    def __init__(self, answers: list[tuple[int, str] | Exception]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, object]] = []

    def run(self, cmd: str, user: str = "root", timeout: float = 60, input: object = None,
            check: bool = False) -> CommandResult:
        self.sent.append((cmd, user, input))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, out = answer
        return CommandResult(cmd, user, status, out, "", 0.01)


def _session(answers: list[tuple[int, str] | Exception]) -> tuple[GuestSession, FakeVM, Recorder]:
    vm = FakeVM(answers)
    recorder = Recorder(nodeid="t.py::f", phase="call")
    return GuestSession(vm, recorder=recorder), vm, recorder  # type: ignore[arg-type]


def test_every_command_is_recorded_with_its_outcome() -> None:
    guest, vm, rec = _session([(0, "123\n"), (1, "open: OK\nwrite: EIO\n"), (0, "x\n"), (3, "")])
    assert guest.spawn() == 123
    assert guest.write("/m/c/tasks", "abc").errno == "EIO"
    assert guest.read("/m/c/tasks") == "x\n"
    with pytest.raises(CommandFailed):
        guest.sh("false")
    assert [(c.kind, c.command, c.exit_status, c.pid) for c in rec.commands] == [
        ("spawn", "nohup sleep 100000 >/dev/null 2>&1 </dev/null & echo $!", 0, 123),
        ("probe", "rcfs-probe -e write /m/c/tasks abc", 1, None),
        ("read", "cat -- /m/c/tasks", 0, None),
        ("sh", "false", 3, None)]
    assert [cmd for cmd, _, _ in vm.sent] == [c.command for c in rec.commands]  # what the guest got
    assert rec.commands[1].stdout == "open: OK\nwrite: EIO\n"


def test_a_command_that_raises_is_recorded_without_a_status() -> None:
    guest, _, rec = _session([InfraError("the VM is not running")])
    with pytest.raises(InfraError):
        guest.run("sleep 1", user="alice", input="data")
    (cmd,) = rec.commands
    assert (cmd.exit_status, cmd.error) == (None, "the VM is not running")
    assert (cmd.user, cmd.input) == ("alice", "data")


def test_a_mount_point_made_earlier_on_the_vm_is_recorded_for_a_replay() -> None:
    guest, _, rec = _session([(0, "")])
    Rcfs(guest).new_mountpoint()
    again = Rcfs(guest)  # the next test on the same VM
    again.new_mountpoint()
    assert [(c.kind, c.command, c.replay_only) for c in rec.commands] == [
        ("sh", "mkdir -p /mnt/rcfs1", False), ("mountpoint", "mkdir -p /mnt/rcfs1", True)]


def test_failure_point_and_limits() -> None:
    rec = Recorder(nodeid="t.py::f", phase="call")
    for n in range(MAX_COMMANDS + 3):
        rec.add("run", f"echo {n}", started=rec.start(), exit_status=0, stdout="y" * (MAX_OUTPUT + 1))
    rec.failed("call", kernel_report=True)
    rec.failed("teardown")  # the first failure wins
    trace = rec.trace("s/default", "bug", "doc")
    assert (trace.failed_phase, trace.failed_after, trace.kernel_report) == ("call", MAX_COMMANDS, True)
    assert trace.dropped == 3 and len(trace.commands) == MAX_COMMANDS
    assert trace.commands[0].stdout_truncated and len(trace.commands[0].stdout) == MAX_OUTPUT


def test_session_records_round_trip_traces_wall_time_and_vm_waits(tmp_path: Path) -> None:
    trace = TestTrace("t.py::f", "s/default", "bug", [GuestCommand("probe", "rcfs-probe x", exit_status=1,
                                                                    stdout="x: EIO\n", gap=0.5)],
                      "call", 1, True, 0, "doc")
    run = KernelRun("s/default", "default", "s", vm_wait_seconds=1.5, vm_waits=3)
    records = SessionRecords(kernels=[run], wall_seconds=12.25, traces={"t.py::f": trace})
    records.write(tmp_path / "records.json")
    assert SessionRecords.load(tmp_path / "records.json") == records
    old = '{"version": 1, "kernels": [{"label": "a", "config": "c", "series": "s"}]}'
    loaded = SessionRecords.from_json(old)  # records written before these fields existed
    assert loaded.wall_seconds is None and loaded.traces == {} and loaded.kernels[0].vm_waits == 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class BootingVM:
    def __init__(self, clock: Clock, cfg: Any, name: str) -> None:
        self.clock, self.name, self.up = clock, name, True
        self.console_log = Path(f"/nonexistent/{name}.log")

    def boot(self) -> Any:
        from harness.machine.vm import BootInfo

        if threading.current_thread() is threading.main_thread():  # a spare boots beside the tests
            self.clock.now += 2.0  # a boot takes 2 s of the fake clock
        return BootInfo(1, 2.0, {}, self.console_log, resumed=True)

    def alive(self) -> bool:
        return self.up

    def crashed(self) -> bool:
        return False

    def stop(self, graceful: bool = True) -> None:
        self.up = False


def test_vm_waits_count_boots_on_the_critical_path_not_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(kernels, "time", types.SimpleNamespace(monotonic=clock))
    monkeypatch.setattr(kernels, "VM", lambda cfg, name: BootingVM(clock, cfg, name))
    monkeypatch.setattr(target, "vm_config", lambda prepared, options, name: name)

    class Config:
        def getoption(self, name: str) -> Any:
            return None

    pool = kernels.KernelPool(Config())  # type: ignore[arg-type]

    def prepare(spec: KernelSpec) -> object:
        clock.now += 30.0  # building is not waiting for a VM
        return object()

    monkeypatch.setattr(pool, "prepare", prepare)
    spec = KernelSpec("default", "rcfs-fixes")
    first = pool.vm(spec)
    assert pool.vm(spec) is first  # the same VM again: no wait
    pool.discard()
    pool.vm(spec)  # a replacement, booted now (its spare starts in the background)
    run = pool.records.kernel(spec.label)
    assert run is not None and (run.vm_waits, run.vm_wait_seconds) == (2, 4.0)
    pool.release()


def test_the_failing_step_is_the_one_of_the_failing_line_not_a_finally_cleanup() -> None:
    """Each command notes the line of the test that sent it; a finally: block's commands run before
    the failure is noted, so the failing line decides."""
    rec = Recorder(nodeid="t.py::f", phase="call", test_file=__file__)

    def send(command: str) -> None:  # a helper in the test's module: the test's own line counts
        rec.add("run", command, started=rec.start(), exit_status=0)

    send("spawn")
    try:
        send("cat /proc/1/status"); failing = sys._getframe().f_lineno  # noqa: E702
        raise AssertionError("uids differ")
    except AssertionError:
        send("rm -rf /tmp/x")  # the test's finally:
    rec.failed("call", line=failing)
    trace = rec.trace()
    assert [c.line for c in trace.commands] == [failing - 2, failing, failing + 3]
    assert trace.failing_index() == 1
    lines_unknown = TestTrace("t.py::f", commands=trace.commands, failed_phase="call", failed_after=3)
    assert lines_unknown.failing_index() == 2  # without a line: the last command


def test_a_command_sent_from_a_helper_thread_notes_the_line_the_test_waits_at() -> None:
    """A long script runs in a thread while the test's thread watches the console: the script is the
    step of the line that started it, so a later assert fails at it (and the reproducer replays it)."""
    rec = Recorder(nodeid="t.py::f", phase="call", test_file=__file__)
    # the thread runs only code of other modules (as detached.py's does); the test's thread is on
    # this one line whether the command is sent during start() or join()
    worker = threading.Thread(target=rec.add, args=("run", "long script"), kwargs={"started": 0.0})
    worker.start(); worker.join(); line = sys._getframe().f_lineno  # noqa: E702
    rec.failed("call", line=line + 2)  # an assert below, on the script's output
    trace = rec.trace()
    assert [c.line for c in trace.commands] == [line]
    assert trace.failing_index() == 0
