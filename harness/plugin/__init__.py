"""pytest plugin: run tests inside a booted 2.6.20 guest.

Registered through the ``pytest11`` entry point, so ``pytest`` in a venv with
the harness installed has it.  It adds:

* options ``--kernel-config``, ``--kernel-series``, ``--kernel-src``,
  ``--keep-vm``, ``--boot-timeout``, ``--kernel-fresh-boot``;
* the marker ``@pytest.mark.kernel(config=..., series=..., set={...})`` for a
  test that needs a particular kernel (the options give the defaults);
* fixtures ``guest`` (:class:`~harness.plugin.guest.GuestSession`) and ``rcfs``
  (:class:`~harness.plugin.guest.Rcfs`, mounts cleaned up depth-first).

Each distinct kernel is built and booted once per session: tests are
reordered so that tests of one kernel run together.  A VM is resumed from
the kernel's saved boot (made by one real boot, then cached; see
:mod:`harness.machine.snapshot`) unless ``--kernel-fresh-boot``.  After every test the
console since the test began is scanned for panics, Oops, BUG, WARNING and
lock-dependency reports; any of them fails the test with the excerpt.  A VM
that died, crashed or could not be cleaned up is replaced before the next
test.  Infrastructure faults (QEMU died, SSH dropped, timeouts) are reported
as errors, not failures.  Failing tests carry the console and kernel-log
excerpts in their report (and in JUnit XML as properties).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError, InfraError, InputError
from harness.machine.vm import VM, BootInfo, ConsoleEvent
from harness.plugin.guest import GuestSession, Rcfs
from harness.run import target
from harness.run.target import BootOptions, KernelSpec, Prepared

CHECKED_KINDS = frozenset({"panic", "oops", "bug", "warning", "lockdep"})
REPLACE_KINDS = frozenset({"panic", "oops", "bug"})  # the kernel is no longer trustworthy
KERNEL_FIXTURES = frozenset({"guest", "rcfs", "kernel_vm"})

_MARK: pytest.StashKey[int] = pytest.StashKey()
_VM: pytest.StashKey[VM] = pytest.StashKey()
_CALL_END: pytest.StashKey[int] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "kernel under test (harness)")
    group.addoption("--kernel-config", default="default", help="named kernel config (default: default)")
    group.addoption("--kernel-series", default="rcfs-testss",
                    help="patch series for tests that do not name one (default: rcfs-testss)")
    group.addoption("--kernel-src", default=None, help="2.6.20 source (directory, tarball, PATH@REF)")
    group.addoption("--keep-vm", action="store_true",
                    help="leave the last VM running at the end and print how to reach it")
    group.addoption("--boot-timeout", type=float, default=None, help="seconds to SSH login (default 60)")
    group.addoption("--kernel-fresh-boot", action="store_true",
                    help="boot every VM instead of resuming the kernel's saved boot (harness/snapshot.py)")
    group.addoption("--kernel-bzimage", default=None, metavar="PATH",
                    help="boot this bzImage instead of building (used by harness bisect)")
    group.addoption("--kernel-cell", action="store_true",
                    help="run only the tests of the one kernel given by --kernel-config/--kernel-series "
                         "(tests without a config marker belong to 'default'); used by harness test")
    group.addoption("--harness-records", default=None, metavar="PATH",
                    help="write the builds and boots of this session as JSON (used by harness test)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel(config=None, series=None, set=None): the kernel this test needs "
        "(config name, patch series, {SYMBOL: VALUE} overrides)",
    )
    config.stash[_POOL] = KernelPool(config)


def spec_for(item: pytest.Item) -> KernelSpec:
    config = item.config
    marker = item.get_closest_marker("kernel")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    overrides = kwargs.get("set") or {}
    return KernelSpec(
        config=kwargs.get("config") or config.getoption("--kernel-config"),
        series=kwargs.get("series") or config.getoption("--kernel-series"),
        overrides=tuple(f"{k}={v}" for k, v in sorted(overrides.items())),
        kernel_src=config.getoption("--kernel-src"),
    )


def needs_kernel(item: pytest.Item) -> bool:
    return bool(KERNEL_FIXTURES & set(getattr(item, "fixturenames", ())))


def in_cell(item: pytest.Item, config: pytest.Config) -> bool:
    """Does ``item`` belong to the (config, series) cell that --kernel-cell selects?"""
    marker = item.get_closest_marker("kernel")
    wanted = dict(marker.kwargs) if marker else {}
    return (needs_kernel(item)
            and (wanted.get("config") or "default") == config.getoption("--kernel-config")
            and (wanted.get("series") or config.getoption("--kernel-series"))
            == config.getoption("--kernel-series"))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Group kernel tests by kernel (stable otherwise), so each kernel boots once."""
    if config.getoption("--kernel-cell"):
        selected = [it for it in items if in_cell(it, config)]
        deselected = [it for it in items if not in_cell(it, config)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected
    order: dict[KernelSpec, int] = {}
    for item in items:
        if needs_kernel(item):
            order.setdefault(spec_for(item), len(order))
    items.sort(key=lambda it: order.get(spec_for(it), -1) if needs_kernel(it) else -1)


# --- the pool of kernels -------------------------------------------------------------


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
    prepared: dict[KernelSpec, Prepared | BaseException] = field(default_factory=dict)
    current: tuple[KernelSpec, VM] | None = None
    spare: _Spare | None = None
    boots: int = 0
    boot_failures: dict[KernelSpec, list[str]] = field(default_factory=dict)
    max_boot_failures: int = 2
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    discards: dict[KernelSpec, int] = field(default_factory=dict)
    _vm_count: dict[KernelSpec, int] = field(default_factory=dict)

    def _record(self, spec: KernelSpec) -> dict[str, Any]:
        return self.records.setdefault(spec.label, {
            "config": spec.config, "series": spec.series, "overrides": list(spec.overrides),
            "build": None, "boots": []})

    def prepare(self, spec: KernelSpec) -> Prepared:
        if spec not in self.prepared:
            start = time.monotonic()
            try:
                bzimage = self.config.getoption("--kernel-bzimage")
                self.prepared[spec] = prepared = (
                    target.prepare_prebuilt(spec, Path(bzimage)) if bzimage else target.prepare(spec))
                built = prepared.build
                self._record(spec)["build"] = {
                    "status": "PASS", "duration": round(built.duration if not built.cached
                                                        else time.monotonic() - start, 2),
                    "cached": built.cached, "log": str(built.log), "warnings": built.warnings,
                    "bzimage": str(built.bzimage)}
            except HarnessError as exc:
                self.prepared[spec] = exc
                if not _no_source(exc):
                    self._record(spec)["build"] = {
                        "status": "FAIL", "duration": round(time.monotonic() - start, 2),
                        "message": str(exc)}
        found = self.prepared[spec]
        if isinstance(found, BaseException):
            if _no_source(found):
                pytest.skip(f"{found}. Run `make test-kernel` once or set HARNESS_KERNEL_SRC")
            raise found
        return found

    def _new_vm(self, spec: KernelSpec, prepared: Prepared) -> VM:
        options = BootOptions(boot_timeout=self.config.getoption("--boot-timeout"),
                              snapshot=not self.config.getoption("--kernel-fresh-boot"))
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
        if self.current is not None:
            current_spec, vm = self.current
            if current_spec == spec and vm.alive() and not vm.crashed():
                return vm
            self.release_current()
        prepared = self.prepare(spec)
        failures = self.boot_failures.setdefault(spec, [])
        if len(failures) >= self.max_boot_failures:
            raise InfraError(f"{spec.label} failed to boot {len(failures)} times; last: {failures[-1]}")
        boots = self._record(spec)["boots"]
        spare = self._take_spare(spec)
        try:
            if spare is not None:
                vm = spare.vm
                info = spare.wait()
            else:
                vm = self._new_vm(spec, prepared)
                info = vm.boot()
        except HarnessError as exc:
            vm.stop()
            failures.append(str(exc))
            boots.append({"status": "FAIL", "console": str(vm.console_log), "message": str(exc)})
            raise
        except BaseException:
            vm.stop()
            raise
        boots.append({"status": "PASS", "duration": round(info.boot_seconds, 2),
                      "console": str(vm.console_log), "resumed": info.resumed})
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


_POOL: pytest.StashKey[KernelPool] = pytest.StashKey()


def _no_source(exc: BaseException) -> bool:
    return "no Linux 2.6.20 source available" in str(exc)


def pool(config: pytest.Config) -> KernelPool:
    return config.stash[_POOL]


def pytest_sessionfinish(session: pytest.Session) -> None:
    kernels = pool(session.config)
    records_path = session.config.getoption("--harness-records")
    if records_path:
        Path(records_path).write_text(json.dumps(kernels.records, indent=2))
    kernels.drop_spare()  # nobody needs it now; a kept VM must not keep a hidden one alive
    if session.config.getoption("--keep-vm") and kernels.current is not None:
        spec, vm = kernels.current
        prepared = kernels.prepared[spec]
        if isinstance(prepared, Prepared):
            target.write_kept(vm, prepared)
            key = prepared.image.client_key("root")
            print(f"\nharness: VM {spec.label} kept: ssh -i {key} -p {vm.port} root@127.0.0.1 "
                  "(or harness ssh); Ctrl-C to stop it")
            try:
                while vm.alive():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            finally:
                target.clear_kept()
    kernels.release()


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def kernel_vm(request: pytest.FixtureRequest) -> VM:
    """The running VM for this test's kernel (booted once per kernel)."""
    item = request.node
    try:
        vm = pool(request.config).vm(spec_for(item))
    except InputError:
        raise
    except HarnessError as exc:
        raise InfraError(f"kernel {spec_for(item).label}: {exc}") from exc
    item.stash[_VM] = vm
    item.stash[_MARK] = vm.mark()
    return vm


@pytest.fixture
def guest(kernel_vm: VM, request: pytest.FixtureRequest) -> Iterator[GuestSession]:
    current = pool(request.config).current
    prepared = pool(request.config).prepared.get(current[0]) if current else None
    system_map = prepared.build.system_map if isinstance(prepared, Prepared) else None
    session = GuestSession(kernel_vm, system_map=system_map)
    yield session
    try:
        session.cleanup()
    except HarnessError:
        session.discard_vm = True
    if session.discard_vm:
        pool(request.config).discard()


@pytest.fixture
def rcfs(guest: GuestSession, request: pytest.FixtureRequest) -> Iterator[Rcfs]:
    mounts = Rcfs(guest)
    yield mounts
    try:
        problems = mounts.cleanup()
    except HarnessError as exc:
        problems = [str(exc)]
    if problems:
        # the next test must not inherit this state: give it a fresh VM
        pool(request.config).discard()
        request.node.user_properties.append(("cleanup_problems", "; ".join(problems)))


# --- verdicts ------------------------------------------------------------------------


def kernel_reports(item: pytest.Item) -> list[ConsoleEvent]:
    vm = item.stash.get(_VM, None)
    if vm is None:
        return []
    vm.sync_console()  # the watcher takes in what the kernel printed during the test
    return [e for e in vm.events_since(item.stash.get(_MARK, 0)) if e.kind in CHECKED_KINDS]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    vm = item.stash.get(_VM, None)
    if vm is None:
        return
    if call.when == "teardown" and _CALL_END in item.stash:
        vm.sync_console()
        late = [e for e in vm.events_since(item.stash[_CALL_END]) if e.kind in CHECKED_KINDS]
        if late:  # cleanup (killing tasks, rmdir, umount) made the kernel complain
            report.outcome = "failed"
            report.longrepr = "kernel reported problem(s) during cleanup:\n" + "\n\n".join(
                f"{e}\n{e.excerpt}" for e in late)
            if any(e.kind in REPLACE_KINDS for e in late):
                pool(item.config).discard()
    if call.when == "call":
        events = kernel_reports(item)
        item.stash[_CALL_END] = vm.mark()
        if events and report.outcome != "skipped":
            text = "\n\n".join(f"{e}\n{e.excerpt}" for e in events)
            report.outcome = "failed"
            report.longrepr = f"kernel reported {len(events)} problem(s) during the test:\n{text}"
        crashed = any(e.kind in REPLACE_KINDS for e in events)
        # a kernel crash is the kernel's verdict, not an infrastructure fault
        infra = not crashed and call.excinfo is not None and call.excinfo.errisinstance(InfraError)
        if infra:
            assert call.excinfo is not None
            _add_property(item, report, "infra_error", str(call.excinfo.value))
        if infra or crashed or not vm.alive():
            pool(item.config).discard()  # the next test gets a fresh VM
    if report.failed:
        mark = item.stash.get(_MARK, 0)
        console = vm.console_since(mark)[-16000:]
        kernel = "\n\n".join(f"{e}\n{e.excerpt}" for e in vm.events_since(mark))
        report.sections.append(("guest console", console or "(nothing)"))
        if kernel:
            report.sections.append(("kernel log", kernel))
        _add_property(item, report, "console_log", console)
        if kernel:
            _add_property(item, report, "kernel_log", kernel)


def _add_property(item: pytest.Item, report: pytest.TestReport, name: str, value: str) -> None:
    """On this report (for the terminal) and on the item (JUnit takes the teardown report's)."""
    report.user_properties.append((name, value))
    item.user_properties.append((name, value))


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    """An infrastructure fault during a test is an ERROR, not a FAIL."""
    if report.when == "call" and report.failed and any(
            name == "infra_error" for name, _ in report.user_properties):
        return "error", "E", "ERROR"
    return None
