"""The plugin's VM pool without QEMU: one VM per kernel, replacements, the background spare."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from harness import plugin as pytest_plugin
from harness.errors import StageError
from harness.machine.vm import BootInfo
from harness.run.target import KernelSpec

SPEC = KernelSpec("default", "rcfs-fixes")


class FakeVM:
    made: list[FakeVM] = []
    fail_boot: set[str] = set()

    def __init__(self, cfg: Any, name: str) -> None:
        self.name = name
        self.console_log = Path(f"/nonexistent/{name}.console.log")
        self.stopped: bool | None = None  # graceful?
        self.booted_in: str | None = None
        FakeVM.made.append(self)

    def boot(self) -> BootInfo:
        self.booted_in = threading.current_thread().name
        if self.name in FakeVM.fail_boot:
            raise StageError(f"{self.name}: boot failed: kernel panic")
        return BootInfo(1, 0.25, {"ssh-login": 0.25}, self.console_log, resumed=True)

    def alive(self) -> bool:
        return self.stopped is None

    def crashed(self) -> bool:
        return False

    def stop(self, graceful: bool = True) -> None:
        if self.stopped is None:
            self.stopped = graceful


class FakeConfig:
    def getoption(self, name: str) -> Any:
        return None


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> pytest_plugin.KernelPool:
    FakeVM.made = []
    FakeVM.fail_boot = set()
    monkeypatch.setattr(pytest_plugin, "VM", FakeVM)
    monkeypatch.setattr(pytest_plugin.target, "vm_config", lambda prepared, options, name: name)
    p = pytest_plugin.KernelPool(FakeConfig())  # type: ignore[arg-type]
    monkeypatch.setattr(p, "prepare", lambda spec: object())
    return p


def _wait_spare(pool: pytest_plugin.KernelPool) -> FakeVM:
    assert pool.spare is not None and pool.spare.thread is not None
    pool.spare.thread.join(10)
    vm = pool.spare.vm
    assert isinstance(vm, FakeVM)
    return vm


def test_one_vm_per_kernel_and_no_spare_while_nothing_breaks(pool: pytest_plugin.KernelPool) -> None:
    first = pool.vm(SPEC)
    assert pool.vm(SPEC) is first and pool.spare is None
    pool.release()
    assert [v.stopped for v in FakeVM.made] == [True]  # a healthy VM is shut down gracefully


def test_after_a_replacement_the_next_one_is_resumed_in_the_background(
        pool: pytest_plugin.KernelPool) -> None:
    first = pool.vm(SPEC)
    pool.discard()
    assert first.stopped is False  # thrown away: killed, not rebooted
    second = pool.vm(SPEC)  # booted in the test's thread; a spare starts behind it
    assert second is not first and second.booted_in == threading.current_thread().name
    spare = _wait_spare(pool)
    assert spare.booted_in != threading.current_thread().name
    pool.discard()
    assert pool.vm(SPEC) is spare  # no boot on the critical path
    next_spare = _wait_spare(pool)
    pool.release()
    assert spare.stopped is True and next_spare.stopped is False and second.stopped is False
    boots = pool.records[SPEC.label]["boots"]
    assert [b["status"] for b in boots] == ["PASS"] * 3 and all(b["resumed"] for b in boots)
    assert len({b["console"] for b in boots}) == 3


def test_a_spare_that_failed_to_boot_is_a_boot_failure_of_the_next_test(
        pool: pytest_plugin.KernelPool) -> None:
    FakeVM.fail_boot.add(f"{SPEC.label.replace('/', '-')}-boot3")  # the spare
    pool.vm(SPEC)
    pool.discard()
    pool.vm(SPEC)
    _wait_spare(pool)
    pool.discard()
    with pytest.raises(StageError, match="kernel panic"):
        pool.vm(SPEC)
    assert pool.records[SPEC.label]["boots"][-1]["status"] == "FAIL"
    assert pool.boot_failures[SPEC] and pool.current is None


def test_drop_spare_stops_it(pool: pytest_plugin.KernelPool) -> None:
    pool.vm(SPEC)
    pool.discard()
    current = pool.vm(SPEC)
    spare = _wait_spare(pool)
    pool.drop_spare()
    assert spare.stopped is False and pool.spare is None and current.alive()
