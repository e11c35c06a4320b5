from __future__ import annotations

from harness.plugin.guest import GuestSession, Rcfs


def test_rcfs_is_registered(guest: GuestSession) -> None:
    assert "rcfs" in guest.read("/proc/filesystems").split()


def test_mount_all_lists_test_subsystems(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    files = rcfs.guest.sh(f"ls {top}").split()
    assert "tasks" in files
    assert {"test0.id", "test1.id", "test2.id"} <= set(files)
