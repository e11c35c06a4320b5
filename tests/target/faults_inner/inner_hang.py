"""A guest command never returns: the per-command timeout fires (ERROR); the next test passes."""

from __future__ import annotations

from harness.plugin.guest import GuestSession


def test_1_command_hangs(guest: GuestSession) -> None:
    guest.run("touch /tmp/fault-marker", timeout=20)
    guest.run("sleep 100000", timeout=3)


def test_2_next_test_passes(guest: GuestSession) -> None:
    assert guest.run("uname -r", timeout=20).stdout.strip() == "2.6.20"
    assert guest.run("test -e /tmp/fault-marker", timeout=20).exit_status == 1  # a fresh VM
