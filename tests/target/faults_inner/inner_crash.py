"""The guest kernel crashes mid-test: FAIL with the panic text; the next test gets a fresh VM."""

from __future__ import annotations

from harness.plugin.guest import GuestSession


def test_1_kernel_crashes(guest: GuestSession) -> None:
    guest.run("touch /tmp/fault-marker", timeout=20)
    guest.crash_kernel(panic=True)


def test_2_next_test_passes(guest: GuestSession) -> None:
    assert guest.run("uname -r", timeout=20).stdout.strip() == "2.6.20"
    assert guest.run("test -e /tmp/fault-marker", timeout=20).exit_status == 1  # a fresh VM
