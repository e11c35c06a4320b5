from __future__ import annotations

from harness.plugin.guest import GuestSession, Rcfs
from harness.suites.rcfs.rcfs_util import ALL, expected_files, files


def test_rcfs_is_registered(guest: GuestSession) -> None:
    assert "rcfs" in guest.read("/proc/filesystems").split()


def test_mount_all_lists_test_subsystems(rcfs: Rcfs) -> None:
    """A mount of every subsystem holds exactly the tasks file and each subsystem's three files."""
    top = rcfs.mount()
    assert files(rcfs.guest, top) == expected_files(ALL)
