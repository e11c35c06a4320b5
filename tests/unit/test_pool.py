"""The plugin's VM pool without QEMU: one VM per kernel, replacements, the background spare."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import image
from harness.errors import StageError
from harness.machine.vm import BootInfo
from harness.plugin import kernels as pytest_plugin
from harness.run import target
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
    monkeypatch.setattr(target, "vm_config", lambda prepared, options, name: name)
    p = pytest_plugin.KernelPool(FakeConfig())  # type: ignore[arg-type]
    monkeypatch.setattr(p, "prepare", lambda spec: object())
    return p


def _vm(pool: pytest_plugin.KernelPool, spec: KernelSpec = SPEC) -> FakeVM:
    vm = pool.vm(spec)
    assert isinstance(vm, FakeVM)
    return vm


def _wait_spare(pool: pytest_plugin.KernelPool) -> FakeVM:
    assert pool.spare is not None and pool.spare.thread is not None
    pool.spare.thread.join(10)
    vm = pool.spare.vm
    assert isinstance(vm, FakeVM)
    return vm


def test_one_vm_per_kernel_and_no_spare_while_nothing_breaks(pool: pytest_plugin.KernelPool) -> None:
    first = _vm(pool)
    assert _vm(pool) is first and pool.spare is None
    pool.release()
    assert [v.stopped for v in FakeVM.made] == [True]  # a healthy VM is shut down gracefully


def test_after_a_replacement_the_next_one_is_resumed_in_the_background(
        pool: pytest_plugin.KernelPool) -> None:
    first = _vm(pool)
    pool.discard()
    assert first.stopped is False  # thrown away: killed, not rebooted
    second = _vm(pool)  # booted in the test's thread; a spare starts behind it
    assert second is not first and second.booted_in == threading.current_thread().name
    spare = _wait_spare(pool)
    assert spare.booted_in != threading.current_thread().name
    pool.discard()
    assert _vm(pool) is spare  # no boot on the critical path
    next_spare = _wait_spare(pool)
    pool.release()
    assert spare.stopped is True and next_spare.stopped is False and second.stopped is False
    run = pool.records.kernel(SPEC.label)
    assert run is not None
    assert [b.status for b in run.boots] == ["PASS"] * 3 and all(b.resumed for b in run.boots)
    assert len({b.console_log_path for b in run.boots}) == 3
    assert [b.id for b in run.boots] == [f"harness:{SPEC.label}:boot{n}" for n in (1, 2, 3)]


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
    run = pool.records.kernel(SPEC.label)
    assert run is not None and run.boots[-1].status == "FAIL"
    assert pool.boot_failures[SPEC] and pool.current is None


def test_drop_spare_stops_it(pool: pytest_plugin.KernelPool) -> None:
    pool.vm(SPEC)
    pool.discard()
    current = _vm(pool)
    spare = _wait_spare(pool)
    pool.drop_spare()
    assert spare.stopped is False and pool.spare is None and current.alive()


# --- a first boot that fails, and stages that fail before the boot ------------------------


@pytest.mark.parametrize("with_previous", [False, True], ids=["first-vm", "after-another-kernel"])
def test_a_first_boot_that_fails_is_counted_and_gives_up_after_max_failures(
        pool: pytest_plugin.KernelPool, monkeypatch: pytest.MonkeyPatch, with_previous: bool) -> None:
    """_new_vm boots to save the kernel's boot; when that boot fails there is no VM yet."""
    other = KernelSpec("debug", "rcfs-fixes")
    # the current VM of another kernel, released before SPEC boots
    previous = _vm(pool, other) if with_previous else None

    def boot_to_save(prepared: object, options: object, name: str) -> str:
        if name.startswith(SPEC.label.replace("/", "-")):
            raise StageError(f"{name}: boot failed: Kernel panic - not syncing", stage="boot")
        return name

    monkeypatch.setattr(target, "vm_config", boot_to_save)
    with pytest.raises(StageError, match="Kernel panic"):  # not UnboundLocalError
        pool.vm(SPEC)
    if previous is not None:
        assert previous.stopped is True  # released gracefully: not stopped as if it had failed
    assert pool.boot_failures[SPEC] == [f"{SPEC.label.replace('/', '-')}-boot1: boot failed: "
                                        "Kernel panic - not syncing"]
    run = pool.records.kernel(SPEC.label)
    assert run is not None and [b.status for b in run.boots] == ["FAIL"]
    assert run.boots[0].console_log_path is None and "Kernel panic" in (run.boots[0].message or "")
    with pytest.raises(StageError):
        pool.vm(SPEC)
    # max_boot_failures (2) reached: the kernel is given up on, later tests are not run
    with pytest.raises(pytest_plugin.NotRun, match="failed to boot 2 times"):
        pool.vm(SPEC)
    assert len(run.boots) == 2 and pool.current is None
    assert len(FakeVM.made) == int(with_previous)  # only the other kernel's VM was ever made


@dataclass
class FakeBuilt:
    bzimage: Path = Path("/cache/builds/x/out/arch/i386/boot/bzImage")
    log: Path = Path("/cache/builds/x/build.log")
    system_map: Path = Path("/cache/builds/x/out/System.map")
    cached: bool = True
    duration: float = 31.5
    warnings: int = 2


@pytest.fixture
def staged_pool(monkeypatch: pytest.MonkeyPatch) -> pytest_plugin.KernelPool:
    """A pool whose prepare is real, over fake stages: the kernel builds; the image may not."""
    FakeVM.made = []
    monkeypatch.setattr(pytest_plugin, "VM", FakeVM)
    monkeypatch.setattr(target, "vm_config", lambda prepared, options, name: name)
    monkeypatch.setattr(image, "resolve_recipe", lambda name: f"recipe {name}")
    monkeypatch.setattr(target, "build_kernel", lambda spec, **kw: FakeBuilt())
    return pytest_plugin.KernelPool(FakeConfig())  # type: ignore[arg-type]


def test_an_image_failure_is_one_stage_error_the_build_passed_and_the_rest_is_not_run(
        staged_pool: pytest_plugin.KernelPool, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_image(recipe: object) -> object:
        raise StageError("busybox: make failed (exit 2)", stage="image")

    monkeypatch.setattr(image, "build_image", no_image)
    spec = KernelSpec("default", "rcfs-fixes", overrides=("CONFIG_RCFS_TESTSS=y",))
    with pytest.raises(StageError, match="busybox"):  # the first test meets the error itself
        staged_pool.vm(spec)
    for _ in range(3):  # every later test of this kernel: not run, without trying again
        with pytest.raises(pytest_plugin.NotRun, match="the image stage of .* failed"):
            staged_pool.vm(spec)
    run = staged_pool.records.kernel(spec.label)
    assert run is not None
    assert run.build is not None and run.build.status == "PASS"  # the kernel did build
    assert (run.build.id, run.build.kernel, run.build.config, run.build.overrides) == (
        "harness:rcfs-fixes/default[RCFS_TESTSS=y]", spec.label, "default", ["CONFIG_RCFS_TESTSS=y"])
    assert (run.build.warnings, run.build.cached) == (2, True)
    assert run.build.log_path == "/cache/builds/x/build.log"
    assert [(s.stage, s.status, s.kind, s.build_id) for s in run.stages] == [
        ("image", "ERROR", "stage", run.build.id)]
    assert run.boots == [] and FakeVM.made == []


def test_a_build_failure_is_the_build_record_naming_its_stage(
        staged_pool: pytest_plugin.KernelPool, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_patch(spec: object, **kw: object) -> object:
        raise StageError("0003-fix.patch does not apply", stage="patch")

    monkeypatch.setattr(target, "build_kernel", bad_patch)
    with pytest.raises(StageError):
        staged_pool.vm(SPEC)
    with pytest.raises(pytest_plugin.NotRun, match="the patch stage"):
        staged_pool.vm(SPEC)
    run = staged_pool.records.kernel(SPEC.label)
    assert run is not None and run.build is not None and run.stages == []
    assert run.build.status == "FAIL"
    assert run.build.message == "patch stage failed: 0003-fix.patch does not apply"
