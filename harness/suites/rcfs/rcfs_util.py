"""Helpers the rcfs suite's tests share: a container's files and /proc/mounts, read in the guest."""

from __future__ import annotations

from harness.plugin.guest import GuestSession

#: the test subsystems of the rcfs-testss series (CONFIG_RCFS_TESTSS_COUNT=3)
ALL = ("test0", "test1", "test2")
#: the files each test subsystem adds to every container
SUBSYS_FILES = ("attach_count", "deny_attach", "id")


def files(guest: GuestSession, directory: str) -> list[str]:
    """Every entry of ``directory`` (``.`` and ``..`` included), sorted."""
    return sorted(guest.sh(f"ls -a {directory}").split())


def expected_files(names: tuple[str, ...], children: tuple[str, ...] = ()) -> list[str]:
    """What a container of the subsystems ``names`` holds, with child containers ``children``."""
    found = [".", "..", "tasks", *children]
    for name in names:
        found += [f"{name}.{suffix}" for suffix in SUBSYS_FILES]
    return sorted(found)


def mount_entries(guest: GuestSession) -> list[list[str]]:
    """/proc/mounts, one list of fields per line."""
    return [line.split() for line in guest.read("/proc/mounts").splitlines()]


def mounted(guest: GuestSession, path: str) -> bool:
    return any(len(fields) > 1 and fields[1] == path for fields in mount_entries(guest))


def mount_line(guest: GuestSession, path: str) -> list[str]:
    """The one /proc/mounts line of ``path`` (the test fails when there is none, or several)."""
    found = [fields for fields in mount_entries(guest) if len(fields) > 1 and fields[1] == path]
    assert len(found) == 1, f"{path} in /proc/mounts: {found}"
    return found[0]
