"""Grouping failing tests into distinct bugs, on the recorded failures of the posted rcfs patch
(14 failing tests of rcfs-testss/default, run with --runxfail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import resources
from harness.results import SessionRecords, load_summary
from harness.results.guestlog import GuestCommand, TestTrace
from harness.results.records import TestRecord
from harness.review import bugs, diff
from harness.review.locate import for_operation, operation
from harness.review.oops import parse_reports

DATA = Path(__file__).resolve().parent.parent / "data" / "review"
POSTED = diff.parse_diff((resources.shipped("patches") / "rcfs" / "0001-rcfs-core-patch.patch").read_text())
FUNCTIONS = {"rcfs_tasks_read", "rcfs_file_read", "rcfs_common_file_write", "rcfs_file_write",
             "attach_task_by_pid", "rcfs_rmdir"}


@pytest.fixture(scope="module")
def failed() -> list[bugs.FailedTest]:
    summary = load_summary(DATA / "summary-testss.json")
    records = SessionRecords.load(DATA / "records-testss.json")
    traces = {(t.kernel, n): t for n, t in records.traces.items()}
    return bugs.failed_tests(summary.tests, traces, {b.id: b.kernel for b in summary.builds})


def test_fourteen_failures_are_seven_bugs(failed: list[bugs.FailedTest]) -> None:
    assert len(failed) == 14 and all(t.trace is not None for t in failed)
    found = {b.signature: sorted(t.nodeid for t in b.tests) for b in bugs.group(failed, FUNCTIONS)}
    assert found == {
        ("errno", "rmdir", "<dir>", "EBUSY"): [
            "test_rmdir.py::test_rmdir_after_task_moved_out[sibling]",
            "test_rmdir.py::test_rmdir_after_task_moved_out[top]"],
        ("errno", "write", "tasks", "EIO"): sorted(
            f"test_tasks.py::test_non_numeric_write_is_einval[{p}]" for p in ("", "\\n", "abc", "x12")),
        ("behaviour", "two hierarchies: a task in containers of both is listed by neither"): [
            "test_tasks.py::test_task_in_two_hierarchies_listed_by_both"],
        ("kernel", "oops", "rcfs_tasks_read"): ["test_tasks.py::test_read_past_end_is_eof"],
        ("kernel", "warning", "rcfs_common_file_write"): [
            "test_attach.py::test_hundred_refused_attaches_then_exit"],
        # two tests with different stated behaviours, one failure: the last umount hangs
        ("errno", "umount", "<dir>", "TIMEOUT"): [
            "test_mount.py::test_same_set_twice_shares_one_hierarchy",
            "test_mount.py::test_umount_with_child_keeps_hierarchy"],
        ("behaviour", "bug 6: /proc/mounts runs the subsystem names together without commas"): [
            f"test_mount.py::test_proc_mounts_options_name_subsystems[{p}]"
            for p in ("None-names0", "test1-names1", "test2,test0-names2")],
    }


def test_a_kernel_report_outranks_what_the_test_did(failed: list[bugs.FailedTest]) -> None:
    """The same crash in two tests that did different things is one bug."""
    crash = next(t for t in failed if t.nodeid.endswith("test_read_past_end_is_eof"))
    other = next(t for t in failed if "two_hierarchies" in t.nodeid)
    twin = bugs.FailedTest(other.record, other.kernel, other.trace, crash.reports)
    grouped = bugs.group([crash, twin], FUNCTIONS)
    assert len(grouped) == 1 and grouped[0].report is crash.reports[0]
    assert grouped[0].title.startswith("kernel oops in rcfs_tasks_read(): invalid opcode")


def test_without_a_trace_or_behaviour_the_test_function_decides() -> None:
    def rec(path: str, message: str = "assert 1 == 2") -> TestRecord:
        return TestRecord(id=f"b:{path}", build_id="b", path=path, status="FAIL", message=message)
    tests = bugs.failed_tests([rec("t.py::f[a]"), rec("t.py::f[b]", "assert 17 == 2"), rec("t.py::g"),
                               rec("t.py::f[c]", "FAIL clone 0\nFAIL clone 1"),
                               TestRecord(id="x", build_id="b", path="t.py::h", status="ERROR")], {}, {})
    assert [(b.signature, len(b.tests)) for b in bugs.group(tests, set())] == [
        (("test", "t.py", "f", "assert N == N"), 2), (("test", "t.py", "g", "assert N == N"), 1),
        (("test", "t.py", "f", "FAIL clone N"), 1)]


def test_the_failing_step_is_the_last_command_sent_before_the_failure() -> None:
    trace = TestTrace("t.py::f", commands=[
        GuestCommand("probe", "rcfs-probe rmdir /mnt/rcfs1/c", exit_status=1, stdout="rmdir: EBUSY\n"),
        GuestCommand("mountpoint", "mkdir -p /mnt/rcfs2", replay_only=True),
        GuestCommand("run", "true", phase="teardown", exit_status=0)],
        failed_phase="call", failed_after=2)
    test = bugs.FailedTest(TestRecord(id="i", build_id="b", path="t.py::f", status="FAIL"), "k", trace)
    assert test.failing_step is trace.commands[0]


@pytest.mark.parametrize(("command", "stdout", "expected"), [
    ("rcfs-probe -e write /mnt/rcfs1/c/tasks abc", "open: OK\nwrite: EIO\nclose: OK\n",
     ("write", "/mnt/rcfs1/c/tasks", "EIO")),
    ("rcfs-probe -u 1000 -t 500 umount /mnt/rcfs1", "setuid: OK\numount: TIMEOUT\n",
     ("umount", "/mnt/rcfs1", "TIMEOUT")),
    ("rcfs-probe mount none /mnt/rcfs1 rcfs test0,foo", "mount: ENOENT\n", ("mount", "/mnt/rcfs1", "ENOENT")),
    ("cat -- /mnt/rcfs2/b/tasks", "", ("read", "/mnt/rcfs2/b/tasks", None)),
    ("grep rcfs /proc/mounts", "x", ("proc-mounts", "/proc/mounts", None)),
])
def test_operation_of_a_command(command: str, stdout: str, expected: tuple[str, str, str | None]) -> None:
    assert operation(GuestCommand("probe", command, exit_status=1, stdout=stdout)) == expected


def test_a_failure_without_a_crash_is_located_at_the_handler_returning_its_errno() -> None:
    step = GuestCommand("probe", "rcfs-probe -e write /mnt/rcfs1/c/tasks abc", exit_status=1,
                        stdout="open: OK\nwrite: EIO\nclose: OK\n")
    loc = for_operation(step, [POSTED], [0])
    assert loc is not None and loc.function == "attach_task_by_pid"
    assert loc.how == ("the patch's write handler rcfs_common_file_write(), via attach_task_by_pid(), "
                       "where it returns -EIO")
    assert loc.quote().splitlines()[-2] == "> + return -EIO;"
    hang = GuestCommand("probe", "rcfs-probe -t 1000 umount /mnt/rcfs1", exit_status=3,
                        stdout="umount: TIMEOUT\n")
    loc = for_operation(hang, [POSTED], [0])
    assert loc is not None and loc.function == "rcfs_put_super" and loc.until is not None
    assert loc.quote().splitlines()[-2:] == ["> +}", "> [...]"]  # the whole (short) function


def test_a_kernel_report_during_cleanup_is_a_bug_not_an_error_of_the_harness() -> None:
    cleanup = GuestCommand("run", "rcfs-probe cleanup /m", phase="teardown", exit_status=0)
    teardown = TestTrace("t.py::f", "k", commands=[cleanup], failed_phase="teardown", failed_after=1,
                         kernel_report=True)
    infra = TestTrace("t.py::g", "k", failed_phase="call", failed_after=0)
    lockdep = ("lockdep: [ INFO: possible circular locking dependency detected ]\n"
               " (manage_mutex){--..}, at: [<c0132cc0>] rcfs_rmdir+0x20/0x170")
    records = [TestRecord(id=f"b:{n}", build_id="b", path=n, status="ERROR",
                          kernel_log_excerpt=lockdep if n == "t.py::f" else None)
               for n in ("t.py::f", "t.py::g")]
    tests = bugs.failed_tests(records, {("k", "t.py::f"): teardown, ("k", "t.py::g"): infra}, {"b": "k"})
    assert [t.nodeid for t in tests] == ["t.py::f"]
    (bug,) = bugs.group(tests, {"rcfs_rmdir"})
    assert bug.signature == ("kernel", "lockdep", "rcfs_rmdir")


def test_tests_stating_the_same_behaviour_are_one_bug_whatever_their_failing_step() -> None:
    def test(name: str, behaviour: str, stdout: str) -> bugs.FailedTest:
        step = GuestCommand("probe", f"rcfs-probe {stdout.split(':')[0]} /m/x", exit_status=1, stdout=stdout)
        trace = TestTrace(name, "k", f"posted patch: {behaviour}" if behaviour else "", [step], "call", 1)
        return bugs.FailedTest(TestRecord(id=name, build_id="b", path=name, status="FAIL"), "k", trace)
    tests = [test("t.py::a", "leak", "mount: EBUSY\n"), test("t.py::b", "leak", "mkdir: EEXIST\n"),
             test("t.py::c", "", "mkdir: EEXIST\n"), test("t.py::d", "other", "rmdir: EBUSY\n")]
    grouped = bugs.group(tests, set())
    assert [[t.nodeid for t in b.tests] for b in grouped] == [["t.py::a", "t.py::b", "t.py::c"], ["t.py::d"]]
    assert grouped[0].title == "leak"


def test_a_lockdep_report_does_not_swallow_a_test_that_failed_on_its_own() -> None:
    """On a fresh debug VM the first rmdir's lockdep report comes in every test: the tests whose own
    statement failed stay apart, each its own bug; one failed only by the report is the lockdep bug."""
    lockdep = ("lockdep: [ INFO: possible circular locking dependency detected ]\n"
               " (manage_mutex){--..}, at: [<c0132cc0>] rcfs_rmdir+0x20/0x170")
    oops = ("oops: invalid opcode: 0000 [#1]\nEIP is at copy_to_user+0x30/0x40\n"
            " [<c012af8d>] rcfs_tasks_read+0x4d/0x70")

    def test(name: str, own: bool, excerpt: str, stdout: str = "") -> bugs.FailedTest:
        step = GuestCommand("probe", "rcfs-probe slab", exit_status=0, stdout=stdout, line=10)
        trace = TestTrace(name, "k", f"posted patch: {name} leaks" if own else "", [step], "call", 1,
                          kernel_report=True, failed_line=10 if own else None)
        record = TestRecord(id=name, build_id="b", path=name, status="FAIL", kernel_log_excerpt=excerpt,
                            message="assert 196 <= 8" if own else "kernel reported 1 problem(s)")
        return bugs.FailedTest(record, "k", trace, parse_reports(excerpt))

    tests = [test("t.py::leak_mkdir", True, lockdep), test("t.py::leak_move", True, lockdep),
             test("t.py::open_close", False, lockdep), test("t.py::read", True, oops)]
    assert [t.kernel_decides for t in tests] == [False, False, True, True]
    grouped = bugs.group(tests, {"rcfs_rmdir", "rcfs_tasks_read"})
    assert [(b.signature[0], [t.nodeid for t in b.tests]) for b in grouped] == [
        ("behaviour", ["t.py::leak_mkdir"]), ("behaviour", ["t.py::leak_move"]),
        ("kernel", ["t.py::open_close"]), ("kernel", ["t.py::read"])]  # an oops decides, whatever else
    assert [b.report is not None for b in grouped] == [False, False, True, True]
