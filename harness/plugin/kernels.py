"""The plugin's kernels: each prepared once, one VM at a time, replaced when broken, all recorded.

:class:`KernelPool` builds a kernel and the guest image on first use, boots
(resumes) its VM, keeps a background spare once a kernel's VM has been
replaced, and fills a :class:`~harness.results.session.SessionRecords` with
the build, boot and stage records ``harness test`` reads back.

A kernel the pool gives up on -- a stage before the boot failed (build,
image), or it failed to boot :attr:`KernelPool.max_boot_failures` times --
is reported once: the test that met the failure gets the error, and every
later test of that kernel raises :class:`NotRun` (reported as not run, MISS).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import image
from harness.coverage import report as coverage_report
from harness.errors import HarnessError, InputError, StageError
from harness.kernel.build import BuildResult
from harness.machine.vm import VM, BootError, BootInfo
from harness.results import BootRecord, BuildRecord, KernelRun, SessionRecords, StageRecord, Status
from harness.run import target
from harness.run.target import BootOptions, KernelSpec, Prepared


class NotRun(Exception):
    """This test's kernel was given up on earlier in the session; the message says why."""


@dataclass
class _Spare:
    """A VM of ``spec`` booting in the background, to replace the current one at once."""

    spec: KernelSpec
    vm: VM
    info: BootInfo | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._boot, name=f"{self.vm.name}-boot", daemon=True)
        self.thread.start()

    def _boot(self) -> None:
        try:
            self.info = self.vm.boot()
        except BaseException as exc:  # noqa: BLE001 - raised again by wait(), in the test's thread
            self.error = exc

    def wait(self) -> BootInfo:
        """The boot's result, once it has one (BootError and the like are raised here)."""
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.info is not None
        return self.info

    def stop(self) -> None:
        self.vm.stop(graceful=False)
        if self.thread is not None:
            self.thread.join(timeout=30)


@dataclass
class KernelPool:
    """One VM per kernel at a time, booted on first use and replaced when a test breaks it.

    Once a kernel's VM has been thrown away, the next replacement is booted
    in the background while the tests go on (a spare): kernels that break
    under the suite (the posted patch) tend to break again, and a boot is
    then no longer on the critical path.
    """

    config: pytest.Config
    prepared: dict[KernelSpec, Prepared | HarnessError] = field(default_factory=dict)
    current: tuple[KernelSpec, VM] | None = None
    spare: _Spare | None = None
    boots: int = 0
    boot_failures: dict[KernelSpec, list[str]] = field(default_factory=dict)
    max_boot_failures: int = 2
    records: SessionRecords = field(default_factory=SessionRecords)
    not_run: dict[KernelSpec, str] = field(default_factory=dict)  # kernels given up on, and why
    discards: dict[KernelSpec, int] = field(default_factory=dict)
    _vm_count: dict[KernelSpec, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)  # wall time is measured from here

    def __post_init__(self) -> None:
        coverage = self.coverage_dir()
        if coverage is not None and "," in str(coverage.absolute()):
            raise pytest.UsageError(f"--kernel-coverage {coverage}: no commas allowed (QEMU option syntax)")

    def coverage_dir(self) -> Path | None:
        """``--kernel-coverage DIR``: where every VM's trace goes (:mod:`harness.coverage`), or None."""
        value = self.config.getoption("--kernel-coverage")
        return Path(value) if value else None

    def write_coverage(self) -> None:
        """With ``--kernel-coverage DIR``, once the VMs are stopped: DIR/coverage.json and .html."""
        directory = self.coverage_dir()
        if directory is not None and directory.is_dir():
            coverage_report.write(directory, [directory])

    def kernel(self, spec: KernelSpec) -> KernelRun:
        """The records of ``spec`` (made on first use)."""
        run = self.records.kernel(spec.label)
        if run is None:
            run = KernelRun(label=spec.label, config=spec.config, series=spec.series,
                            overrides=list(spec.overrides))
            self.records.kernels.append(run)
        return run

    # -- stages before the boot

    def prepare(self, spec: KernelSpec) -> Prepared:
        """The built kernel and image of ``spec`` (built on first use).

        The first failure is raised as it is; later calls raise :class:`NotRun`.
        Without any kernel source the test is skipped, saying how to get one.
        """
        if spec in self.not_run:
            raise NotRun(self.not_run[spec])
        found = self.prepared.get(spec)
        if found is None:
            found = self.prepared[spec] = self._prepare(spec)
        if isinstance(found, HarnessError):
            if no_source(found):
                pytest.skip(f"{found}. Run `make test-kernel` once or set HARNESS_KERNEL_SRC")
            raise found
        return found

    def _prepare(self, spec: KernelSpec) -> Prepared | HarnessError:
        run = self.kernel(spec)
        start = time.monotonic()
        step = "build"
        try:
            bzimage = self.config.getoption("--kernel-bzimage")
            if bzimage:
                step = "image"
                prepared = target.prepare_prebuilt(spec, Path(bzimage))
                run.build = self._build_record(spec, prepared.build, start)
                return prepared
            recipe = image.resolve_recipe(spec.recipe)
            coverage = self.coverage_dir() is not None  # the coverage flavour: with debug info
            built = target.build_kernel(spec, debug_info=True) if coverage else target.build_kernel(spec)
            run.build = self._build_record(spec, built, start)
            step, start = "image", time.monotonic()
            return Prepared(spec, built, image.build_image(recipe))
        except HarnessError as exc:
            if no_source(exc):
                return exc
            stage = stage_of(exc, step)
            duration = round(time.monotonic() - start, 2)
            status: Status = "FAIL" if isinstance(exc, StageError) else "ERROR"
            if step == "build":
                run.build = BuildRecord.new(spec.series, spec.config, status, kernel=spec.label,
                                            overrides=list(spec.overrides), duration=duration,
                                            message=f"{stage} stage failed: {exc}")
            else:
                run.stages.append(StageRecord(id=f"{run.build_id}:{stage}", build_id=run.build_id,
                                              stage=stage, status="ERROR", message=str(exc), kind=exc.kind,
                                              duration=duration))
            self.not_run[spec] = f"the {stage} stage of {spec.label} failed"
            return exc

    @staticmethod
    def _build_record(spec: KernelSpec, built: BuildResult, start: float) -> BuildRecord:
        return BuildRecord.new(
            spec.series, spec.config, "PASS", kernel=spec.label, overrides=list(spec.overrides),
            duration=round(built.duration if not built.cached else time.monotonic() - start, 2),
            log_path=str(built.log), bzimage_path=str(built.bzimage), warnings=built.warnings,
            cached=built.cached)

    # -- VMs

    def _new_vm(self, spec: KernelSpec, prepared: Prepared) -> VM:
        """A VM of ``spec``, not started; with a saved boot, making it first (a real boot that may fail)."""
        options = BootOptions(boot_timeout=self.config.getoption("--boot-timeout"),
                              snapshot=not self.config.getoption("--kernel-fresh-boot"),
                              coverage=self.coverage_dir())
        n = self._vm_count[spec] = self._vm_count.get(spec, 0) + 1
        name = f"{spec.label.replace('/', '-')}-boot{n}"  # each boot keeps its console log
        return VM(target.vm_config(prepared, options, name), name=name)

    def _start_spare(self, spec: KernelSpec, prepared: Prepared) -> None:
        self.spare = _Spare(spec, self._new_vm(spec, prepared))
        self.spare.start()

    def _take_spare(self, spec: KernelSpec) -> _Spare | None:
        spare, self.spare = self.spare, None
        if spare is not None and spare.spec != spec:
            spare.stop()
            return None
        return spare

    def vm(self, spec: KernelSpec) -> VM:
        """The running VM of ``spec``: the current one if healthy, else a new (or spare) one.

        The time a new one takes (stopping the old one, booting or resuming,
        waiting for the spare; not the build before it) is added to the
        kernel's :attr:`~harness.results.KernelRun.vm_wait_seconds`.
        """
        if self.current is not None:
            current_spec, current = self.current
            if current_spec == spec and current.alive() and not current.crashed():
                return current
        start = time.monotonic()
        self.release_current()
        if spec in self.not_run:
            raise NotRun(self.not_run[spec])
        before = time.monotonic()
        prepared = self.prepare(spec)
        run = self.kernel(spec)
        start += time.monotonic() - before
        try:
            return self._up(spec, prepared, run)
        finally:
            run.vm_wait_seconds = round(run.vm_wait_seconds + time.monotonic() - start, 3)
            run.vm_waits += 1

    def _up(self, spec: KernelSpec, prepared: Prepared, run: KernelRun) -> VM:
        """A running VM of ``spec``: the spare if one is booting, else a new one (records its boot)."""
        failures = self.boot_failures.setdefault(spec, [])
        spare = self._take_spare(spec)
        vm: VM | None = spare.vm if spare is not None else None
        try:
            if spare is not None:
                info = spare.wait()
            else:
                vm = self._new_vm(spec, prepared)  # may boot (to save the boot) and fail
                info = vm.boot()
        except HarnessError as exc:
            if vm is not None:
                vm.stop()
            failures.append(str(exc))
            console = vm.console_log if vm is not None else (
                exc.console_log if isinstance(exc, BootError) else None)
            run.boots.append(BootRecord(
                id=f"{run.build_id}:boot{len(run.boots) + 1}", build_id=run.build_id,
                status="FAIL" if isinstance(exc, StageError) else "ERROR",
                console_log_path=str(console) if console else None, message=str(exc)))
            if len(failures) >= self.max_boot_failures:
                self.not_run[spec] = f"{spec.label} failed to boot {len(failures)} times"
            raise
        except BaseException:
            if vm is not None:
                vm.stop()
            raise
        assert vm is not None
        run.boots.append(BootRecord(
            id=f"{run.build_id}:boot{len(run.boots) + 1}", build_id=run.build_id, status="PASS",
            duration=round(info.boot_seconds, 2), console_log_path=str(vm.console_log),
            resumed=info.resumed))
        self.boots += 1
        self.current = (spec, vm)
        if self.discards.get(spec):
            self._start_spare(spec, prepared)
        return vm

    def discard(self) -> None:
        """Throw the current VM away: the next test gets a fresh one (the spare, if any)."""
        if self.current is not None:
            spec, vm = self.current
            self.discards[spec] = self.discards.get(spec, 0) + 1
            self.current = None
            vm.stop(graceful=False)

    def release_current(self) -> None:
        if self.current is not None:
            _, vm = self.current
            self.current = None
            vm.stop()

    def drop_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.stop()

    def release(self) -> None:
        """Stop every VM (the current one and a spare)."""
        try:
            self.release_current()
        finally:
            self.drop_spare()


def stage_of(exc: HarnessError, step: str) -> str:
    """The stage an error names (:attr:`StageError.stage`), else ``input`` for bad input, else ``step``."""
    if isinstance(exc, StageError) and exc.stage != StageError.stage:
        return exc.stage
    if isinstance(exc, InputError):
        return "input"
    return step


def no_source(exc: BaseException) -> bool:
    # harness.kernel.source raises a plain StageError for this; no class tells it apart yet
    return "no Linux 2.6.20 source available" in str(exc)
