"""The guest's SSH server is killed: an ERROR, the VM is replaced, the next test passes."""

from __future__ import annotations

import contextlib

from harness.machine.ssh import SSHError
from harness.plugin.guest import GuestSession


def test_1_sshd_killed(guest: GuestSession) -> None:
    guest.run("touch /tmp/fault-marker", timeout=20)
    with contextlib.suppress(SSHError):  # it may take our own session down with it
        guest.run("killall dropbear", timeout=10)
    guest.run("true", timeout=20)


def test_2_next_test_passes(guest: GuestSession) -> None:
    assert guest.run("uname -r", timeout=20).stdout.strip() == "2.6.20"
    assert guest.run("test -e /tmp/fault-marker", timeout=20).exit_status == 1  # a fresh VM
