"""QEMU is killed mid-test: an ERROR (infrastructure), not a hang; the next test gets a fresh VM."""

from __future__ import annotations

import os
import signal

from harness.machine.vm import VM
from harness.plugin.guest import GuestSession


def test_1_qemu_killed(guest: GuestSession, kernel_vm: VM) -> None:
    guest.run("touch /tmp/fault-marker", timeout=20)
    assert kernel_vm.pid is not None
    os.kill(kernel_vm.pid, signal.SIGKILL)
    guest.run("true", timeout=30)


def test_2_next_test_passes(guest: GuestSession) -> None:
    assert guest.run("uname -r", timeout=20).stdout.strip() == "2.6.20"
    assert guest.run("test -e /tmp/fault-marker", timeout=20).exit_status == 1  # a fresh VM
