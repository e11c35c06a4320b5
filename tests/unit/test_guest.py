"""The guest API's parsing, without a guest: rcfs-probe output and rcfs cleanup reports."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.plugin.guest import Mount, Rcfs, parse_probe


def test_probe_steps_and_first_errno() -> None:
    result = parse_probe("setgroups: OK\nsetgid: OK\nsetuid: OK\nopen: OK\nwrite: EACCES\n", 1)
    assert [s.op for s in result.steps] == ["setgroups", "setgid", "setuid", "open", "write"]
    assert not result.ok and result.errno == "EACCES" and result.failed_step == "write"
    assert str(result).endswith("open: OK / write: EACCES")


def test_probe_success_with_detail() -> None:
    result = parse_probe("open: OK\nwrite: OK 4096\nclose: OK\n", 0)
    assert result.ok and result.errno is None
    step = result.step("write")
    assert step is not None and step.detail == "4096"


def test_probe_read_content_may_look_like_steps() -> None:
    content = "open: EPERM\n12\n"
    result = parse_probe(f"open: OK\nread: OK {len(content)}\n{content}close: OK\n", 0)
    assert result.content == content
    assert [s.op for s in result.steps] == ["open", "read", "close"] and result.ok


def test_probe_read_without_final_newline() -> None:
    result = parse_probe("open: OK\nread: OK 3\n1 2\nclose: OK\n", 0)
    assert result.content == "1 2" and [s.op for s in result.steps] == ["open", "read", "close"]


def test_unknown_errno_names_are_kept() -> None:
    assert parse_probe("mount: ERRNO_512\n", 1).errno == "ERRNO_512"


@dataclass
class _Result:
    stdout: str
    exit_status: int = 0
    stderr: str = ""


@dataclass
class _FakeGuest:
    output: str
    exit_status: int = 0
    commands: list[object] = field(default_factory=list)

    def run(self, cmd: object, user: str = "root", timeout: float = 60) -> _Result:
        self.commands.append(cmd)
        return _Result(self.output, self.exit_status)


def test_cleanup_is_one_probe_run_newest_mount_first_and_reports_problems() -> None:
    fake = _FakeGuest("PROBLEM rmdir /mnt/rcfs1/a EBUSY\nPROBLEM umount /mnt/rcfs1 EBUSY\nnoise\n", 1)
    rcfs = Rcfs(fake)  # type: ignore[arg-type]
    rcfs.mounts = [Mount("/mnt/rcfs1", None), Mount("/mnt/rcfs2", "test0")]
    problems = rcfs.cleanup()
    assert problems == ["rmdir /mnt/rcfs1/a: EBUSY", "umount /mnt/rcfs1: EBUSY"]
    assert fake.commands == [["rcfs-probe", "cleanup", "/mnt/rcfs2", "/mnt/rcfs1"]] and rcfs.mounts == []
    assert rcfs.cleanup() == [] and len(fake.commands) == 1  # nothing mounted: no round trip


def test_cleanup_checks_the_subsystems_even_after_the_test_unmounted() -> None:
    fake = _FakeGuest("PROBLEM mount /tmp/.rcfs-cleanup-check EBUSY\n", 1)
    rcfs = Rcfs(fake)  # type: ignore[arg-type]
    rcfs._touched = True  # a mount was tried, none is left
    assert rcfs.cleanup() == ["mount /tmp/.rcfs-cleanup-check: EBUSY"]
    assert fake.commands == [["rcfs-probe", "cleanup"]]


@pytest.mark.parametrize("status", [139, 1, -1])
def test_cleanup_that_dies_or_fails_silently_is_a_problem(status: int) -> None:
    rcfs = Rcfs(_FakeGuest("", status))  # type: ignore[arg-type]
    rcfs.mounts = [Mount("/mnt/rcfs1", None)]
    assert rcfs.cleanup() == [f"rcfs-probe cleanup exited {status}: "]


def test_probe_timeout_is_a_failed_step() -> None:
    r = parse_probe("umount: TIMEOUT\n", 3)
    assert r.timed_out and not r.ok and r.errno == "TIMEOUT" and r.failed_step == "umount"
    assert not parse_probe("umount: EBUSY\n", 1).timed_out
