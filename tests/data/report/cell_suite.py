"""Tests of a stand-in suite for ``harness test`` cells (tests/unit/test_matrix.py copies it as
test_cell.py next to cell_conftest.py).  Not collected from here."""

import os
import time

import pytest

from harness.machine.vm import VM

PAUSE = float(os.environ.get("FAKE_PAUSE", "0"))


@pytest.mark.parametrize("n", range(12))
def test_plain(kernel_vm: VM, n: int) -> None:
    time.sleep(PAUSE)


@pytest.mark.kernel(set={"CONFIG_RCFS_TESTSS": "y"})
def test_with_an_override(kernel_vm: VM) -> None:
    pass


@pytest.mark.kernel(config="debug")
def test_on_debug(kernel_vm: VM) -> None:
    pass


def test_without_a_kernel() -> None:
    pass
