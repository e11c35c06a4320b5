"""A throwaway pytest suite standing in for the guest tests (tests/unit/test_report.py runs it).

It is copied into a temporary directory as ``test_guest.py`` and run with
``--junitxml -o junit_logging=all``, so the JUnit file the report parses is
real pytest output: stdout plays the guest console excerpt, stderr the kernel
log excerpt.  Not collected from here (the name does not start with test_).
"""

import sys

import pytest

from harness.errors import InfraError


@pytest.fixture
def guest() -> None:
    raise ConnectionError("ssh to guest <vm0> dropped & not back")


def test_mount_rcfs() -> None:
    print("[    1.204] rcfs: mounted on /rcfs")


def test_create_class() -> None:
    for i in range(3000):
        print(f"[ {i:8d}.000] guest console line {i}")
    print("[ 3000.000] <script>alert('console')</script> last console line")
    sys.stderr.write("BUG: unable to handle kernel NULL pointer dereference at virtual address 00000000\n")
    sys.stderr.write("EIP: [<c01234>] rcfs_create+0x1c/0x40 <script>kernel</script>\n")
    assert 1 + 1 == 3, "class <script>alert('x')</script> not created"


def test_needs_guest(guest: None) -> None:
    pass


def test_ssh_drop() -> None:
    raise InfraError("guest vm0: SSH connection lost after 30 s")


def test_numtasks() -> None:
    pytest.skip("numtasks controller not in this series")


@pytest.mark.xfail(reason="shares not enforced yet")
def test_shares() -> None:
    assert 2 < 1


@pytest.mark.xfail(reason="was broken in the posted patch", strict=True)
def test_fixed_strict() -> None:
    pass


class TestHierarchy:
    @pytest.mark.parametrize("depth", [1, 2])
    def test_depth(self, depth: int) -> None:
        assert depth > 0
