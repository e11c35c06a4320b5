"""pytest plugin: run tests inside a booted 2.6.20 guest.

Registered through the ``pytest11`` entry point, so ``pytest`` in a venv with
the harness installed has it.  It adds:

* options ``--kernel-config``, ``--kernel-series``, ``--kernel-src``,
  ``--keep-vm``, ``--boot-timeout``, ``--kernel-fresh-boot``;
* the marker ``@pytest.mark.kernel(config=..., series=..., set={...})`` for a
  test that needs a particular kernel (the options give the defaults);
* fixtures ``guest`` (:class:`~harness.plugin.guest.GuestSession`) and ``rcfs``
  (:class:`~harness.plugin.guest.Rcfs`, mounts cleaned up depth-first).

Each distinct kernel is built and booted once per session (:mod:`harness.plugin.kernels`):
tests are reordered so that tests of one kernel run together.  A VM is
resumed from the kernel's saved boot (see :mod:`harness.machine.snapshot`)
unless ``--kernel-fresh-boot``.  After every test the console since the test
began is scanned for panics, Oops, BUG, WARNING and lock-dependency reports;
any of them fails the test with the excerpt.  A VM that died, crashed or could
not be cleaned up is replaced before the next test.  An error of the harness
(its ``harness.errors`` kind in :data:`~harness.results.ERROR_KINDS`) is an
ERROR, not a failure; the kind is recorded as the JUnit property
``error_kind``.  Every testcase carries its ``nodeid``; failing tests carry the
console and kernel-log excerpts.

With ``--kernel-cell`` (``harness test``) the session runs one kernel only:
the tests whose config, series and ``set=`` overrides are exactly the cell's
(``--kernel-config``, ``--kernel-series``, ``--kernel-set``; a test without a
config marker belongs to ``default``).  A test of the same config and series
that asks for other overrides belongs to another cell; the session lists those
overrides in its records so that ``harness test`` runs that cell too.

SIGINT and SIGTERM stop the session at once: every VM is killed, pytest
stops as on Ctrl-C (fixtures torn down, JUnit written for what ran), and the
records (``--harness-records``) name the signal.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import pytest

from harness.errors import HarnessError, InfraError, InputError
from harness.machine.console import SIDE_KINDS
from harness.machine.vm import VM, ConsoleEvent, live_vms
from harness.plugin.guest import GuestSession, Rcfs
from harness.plugin.kernels import KernelPool, NotRun
from harness.plugin.recorder import Recorder
from harness.plugin.specs import cell_spec, in_cell, marked_config, needs_kernel, spec_for
from harness.results import ERROR_KINDS
from harness.results.junit import PROP_CONSOLE, PROP_ERROR_KIND, PROP_KERNEL_LOG, PROP_NODEID, PROP_NOT_RUN
from harness.run import kept
from harness.run.target import KernelSpec, Prepared

CHECKED_KINDS = frozenset({"panic", "oops", "bug", "warning", "lockdep"})
# After any of them the kernel is no longer trustworthy, and its VM is replaced: 2.6.20's warnings
# ("BUG: at fork.c:117 __put_task_struct()") come before the corruption (a task freed while in use
# oopsed in an RCU callback during a later test), and lockdep turns itself off after its first report.
REPLACE_KINDS = CHECKED_KINDS
# What stops a long guest script at once (suites/rcfs/detached.py).  A lockdep report (SIDE_KINDS) is
# a possible deadlock, not a crash: the script runs on, so the test still states its own finding (a
# leak, a race) instead of only the first rmdir's report of a fresh debug VM; the report fails it after.
STOP_KINDS = REPLACE_KINDS - SIDE_KINDS

_MARK: pytest.StashKey[int] = pytest.StashKey()
_VM: pytest.StashKey[VM] = pytest.StashKey()
_CALL_END: pytest.StashKey[int] = pytest.StashKey()
_CALL_EVENTS: pytest.StashKey[list[ConsoleEvent]] = pytest.StashKey()
_RECORDER: pytest.StashKey[Recorder] = pytest.StashKey()
_POOL: pytest.StashKey[KernelPool] = pytest.StashKey()
_HANDLERS: pytest.StashKey[tuple[Callable[[int, FrameType | None], None], dict[int, Any]]] = (
    pytest.StashKey())
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
                    help="boot every VM instead of resuming the kernel's saved boot")
    group.addoption("--kernel-bzimage", default=None, metavar="PATH",
                    help="boot this bzImage instead of building (used by harness bisect)")
    group.addoption("--kernel-cell", action="store_true",
                    help="run only the tests of the one kernel given by --kernel-config/--kernel-series/"
                         "--kernel-set (tests without a config marker belong to 'default'); "
                         "used by harness test")
    group.addoption("--kernel-set", action="append", default=[], metavar="SYMBOL=VALUE",
                    help="with --kernel-cell: the config overrides of the cell's kernel (repeatable)")
    group.addoption("--kernel-coverage", default=None, metavar="DIR",
                    help="trace the code the patch adds in every VM (kernels built with debug info); "
                         "write DIR/coverage.json and coverage.html (harness.coverage)")
    group.addoption("--harness-records", default=None, metavar="PATH",
                    help="write the kernels, builds, boots and tests of this session as JSON "
                         "(harness.results.session; used by harness test)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel(config=None, series=None, set=None): the kernel this test needs "
        "(config name, patch series, {SYMBOL: VALUE} overrides)",
    )
    config.stash[_POOL] = KernelPool(config)
    _install_signal_handlers(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    installed = config.stash.get(_HANDLERS, None)
    if installed is None:
        return
    ours, previous = installed
    for sig, prev in previous.items():
        if signal.getsignal(sig) is ours:  # not replaced since (the VM registry chains to ours)
            signal.signal(sig, prev)


def _install_signal_handlers(config: pytest.Config) -> None:
    """SIGINT and SIGTERM: kill every VM now, note the signal, and stop pytest as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        kernels = config.stash.get(_POOL, None)
        if kernels is not None and kernels.records.interrupted is None:
            kernels.records.interrupted = signal.Signals(signum).name
        for vm in live_vms():
            vm.kill()
        raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for sig in _SIGNALS:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, on_signal)
    config.stash[_HANDLERS] = (on_signal, previous)


@pytest.hookimpl(trylast=True)  # after -k/-m: overrides only of tests the user selected
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Select the cell's tests (``--kernel-cell``); group kernel tests by kernel (stable otherwise),
    so each kernel boots once."""
    records = pool(config).records
    if config.getoption("--kernel-cell"):
        cell = cell_spec(config)
        selected = [it for it in items if in_cell(it, config)]
        deselected = [it for it in items if not in_cell(it, config)]
        for it in deselected:
            spec = spec_for(it) if needs_kernel(it) else None
            if (spec is not None and marked_config(it) == cell.config and spec.series == cell.series
                    and spec.overrides != cell.overrides
                    and list(spec.overrides) not in records.other_overrides):
                records.other_overrides.append(list(spec.overrides))
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected
    order: dict[KernelSpec, int] = {}
    for item in items:
        if needs_kernel(item):
            order.setdefault(spec_for(item), len(order))
    items.sort(key=lambda it: order.get(spec_for(it), -1) if needs_kernel(it) else -1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test that will run (after all deselection) gets its node id in JUnit and its kernel
    in the records."""
    records = pool(session.config).records
    for item in session.items:
        item.user_properties.append((PROP_NODEID, item.nodeid))
        if needs_kernel(item):
            records.tests[item.nodeid] = spec_for(item).label


def pool(config: pytest.Config) -> KernelPool:
    return config.stash[_POOL]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Note the test done once every phase is reported, unless a signal came (SIGINT, SIGTERM: the
    session stops); keep the guest commands it sent (its trace) in the records."""
    records = pool(item.config).records
    if records.interrupted:
        raise KeyboardInterrupt  # a signal whose KeyboardInterrupt something caught before this test
    recorder = item.stash[_RECORDER] = Recorder(nodeid=item.nodeid, test_file=str(item.path))
    result = yield
    if records.interrupted:
        # The signal came during this test.  Its KeyboardInterrupt may have been replaced by an
        # error of the test's own cleanup (a `finally:` that talks to the killed VM): this test has
        # no result (it is not done), and pytest stops here all the same.
        raise KeyboardInterrupt
    if needs_kernel(item):
        records.traces[item.nodeid] = recorder.trace(records.tests.get(item.nodeid, ""), behaviour(item),
                                                     docstring(item))
    records.done.append(item.nodeid)
    return result


def behaviour(item: pytest.Item) -> str:
    """The test's xfail reason: what a known bug makes the kernel do ("" without one)."""
    marker = item.get_closest_marker("xfail")
    return str(marker.kwargs.get("reason", "")) if marker is not None else ""


def docstring(item: pytest.Item) -> str:
    """The first paragraph of the test's docstring, on one line."""
    doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    _phase(item, "setup")
    return (yield)


class KernelReported(AssertionError):
    """A test whose own statements passed, during which the kernel reported a problem.

    Raised in the call phase itself, so that pytest judges it as the test's failure (a
    ``posted_bug`` that shows only as a kernel report is an expected failure, not an XPASS).
    """


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    _phase(item, "call")
    try:
        result = yield  # the test's own failure, if any, goes through here first
    finally:  # one console sync per test: the report hook below takes these
        item.stash[_CALL_EVENTS] = events = kernel_reports(item)
    if events:
        raise KernelReported(f"kernel reported {len(events)} problem(s) during the test")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    _phase(item, "teardown")
    return (yield)


def _phase(item: pytest.Item, phase: Literal["setup", "call", "teardown"]) -> None:
    recorder = item.stash.get(_RECORDER, None)
    if recorder is not None:
        recorder.phase = phase


def pytest_sessionfinish(session: pytest.Session) -> None:
    kernels = pool(session.config)
    try:
        kernels.drop_spare()  # nobody needs it now; a kept VM must not keep a hidden one alive
        if (session.config.getoption("--keep-vm") and kernels.current is not None
                and kernels.records.interrupted is None):
            _keep(kernels)
        kernels.release()
        kernels.write_coverage()
    finally:
        kernels.records.wall_seconds = round(time.monotonic() - kernels.started, 2)
        records_path = session.config.getoption("--harness-records")
        if records_path:
            kernels.records.write(Path(records_path))


def _keep(kernels: KernelPool) -> None:
    assert kernels.current is not None
    spec, vm = kernels.current
    prepared = kernels.prepared[spec]
    if not isinstance(prepared, Prepared):
        return
    kept.write(vm, prepared)
    key = prepared.image.client_key("root")
    print(f"\nharness: VM {spec.label} kept: ssh -i {key} -p {vm.port} root@127.0.0.1 "
          "(or harness ssh); Ctrl-C to stop it")
    try:
        while vm.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        kept.clear()


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def kernel_vm(request: pytest.FixtureRequest) -> VM:
    """The running VM for this test's kernel (booted once per kernel)."""
    item = request.node
    spec = spec_for(item)
    kernels = pool(request.config)
    try:
        vm = kernels.vm(spec)
    except NotRun as exc:
        item.user_properties.append((PROP_NOT_RUN, str(exc)))
        pytest.skip(f"not run: {exc}")
    except HarnessError as exc:
        if spec in kernels.not_run:  # this test met the failure: the others will not run
            item.user_properties.append((PROP_NOT_RUN, kernels.not_run[spec]))
        if isinstance(exc, InputError):
            raise
        raise InfraError(f"kernel {spec.label}: {exc}") from exc
    item.stash[_VM] = vm
    item.stash[_MARK] = vm.mark()
    return vm


@pytest.fixture
def guest(kernel_vm: VM, request: pytest.FixtureRequest) -> Iterator[GuestSession]:
    kernels = pool(request.config)
    current = kernels.current
    prepared = kernels.prepared.get(current[0]) if current else None
    system_map = prepared.build.system_map if isinstance(prepared, Prepared) else None
    recorder = request.node.stash.get(_RECORDER, None)
    session = GuestSession(kernel_vm, system_map=system_map, recorder=recorder)
    yield session
    if kernels.records.interrupted:
        return  # the VM was killed: nothing to clean up
    try:
        session.cleanup()
    except HarnessError:
        session.discard_vm = True
    if session.discard_vm:
        kernels.discard()


@pytest.fixture
def rcfs(guest: GuestSession, request: pytest.FixtureRequest) -> Iterator[Rcfs]:
    mounts = Rcfs(guest)
    yield mounts
    if pool(request.config).records.interrupted:
        return
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


def failed_line(item: pytest.Item, call: pytest.CallInfo[None]) -> int | None:
    """The line of the test function where its exception went through (its outermost frame in
    the test's module), if any."""
    if call.excinfo is None:
        return None
    lines = [entry.lineno + 1 for entry in call.excinfo.traceback if str(entry.path) == str(item.path)]
    return lines[0] if lines else None


def kernel_reports_since(vm: VM, mark: int) -> list[ConsoleEvent]:
    return [e for e in vm.events_since(mark) if e.kind in CHECKED_KINDS]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    vm = item.stash.get(_VM, None)
    if call.when == "teardown" and vm is not None and _CALL_END in item.stash:
        vm.sync_console()
        late = [e for e in vm.events_since(item.stash[_CALL_END]) if e.kind in CHECKED_KINDS]
        if late:  # cleanup (killing tasks, rmdir, umount) made the kernel complain
            report.outcome = "failed"
            report.longrepr = "kernel reported problem(s) during cleanup:\n" + "\n\n".join(
                f"{e}\n{e.excerpt}" for e in late)
            if any(e.kind in REPLACE_KINDS for e in late):
                pool(item.config).discard()
    if call.when == "call":
        crashed = False
        error = call.excinfo.value if call.excinfo is not None else None
        if vm is not None:
            events = item.stash.get(_CALL_EVENTS, None)
            events = kernel_reports(item) if events is None else events
            item.stash[_CALL_END] = vm.mark()
            # a crash or a warning is the kernel's verdict, whatever error the test then met; a
            # lockdep report (a possible deadlock, which changes nothing the test sees) is not: a
            # test that failed on its own keeps its failure, with the kernel log beside it, so the
            # report that the posted patch prints in every fresh debug VM hides nothing
            own = (error is not None and not isinstance(error, KernelReported)
                   and all(e.kind in SIDE_KINDS for e in events))
            if events and report.outcome != "skipped" and not own:
                text = "\n\n".join(f"{e}\n{e.excerpt}" for e in events)
                report.outcome = "failed"
                report.longrepr = f"kernel reported {len(events)} problem(s) during the test:\n{text}"
            crashed = any(e.kind in REPLACE_KINDS for e in events)
        # a kernel crash is the kernel's verdict, whatever error the test then met
        if isinstance(error, HarnessError) and not crashed:
            _add_property(item, report, PROP_ERROR_KIND, error.kind)
        if vm is not None and (crashed or not vm.alive() or isinstance(error, InfraError)):
            pool(item.config).discard()  # the next test gets a fresh VM
    recorder = item.stash.get(_RECORDER, None)
    if report.failed and recorder is not None and call.when != "collect":
        recorder.failed(call.when, kernel_report=bool(
            vm is not None and kernel_reports_since(vm, item.stash.get(_MARK, 0))),
            line=failed_line(item, call))
    if report.failed and vm is not None:
        mark = item.stash.get(_MARK, 0)
        console = vm.console_since(mark)[-16000:]
        kernel = "\n\n".join(f"{e}\n{e.excerpt}" for e in vm.events_since(mark))
        report.sections.append(("guest console", console or "(nothing)"))
        if kernel:
            report.sections.append(("kernel log", kernel))
        _add_property(item, report, PROP_CONSOLE, console)
        if kernel:
            _add_property(item, report, PROP_KERNEL_LOG, kernel)


def _add_property(item: pytest.Item, report: pytest.TestReport, name: str, value: str) -> None:
    """On this report (for the terminal) and on the item (JUnit takes the teardown report's)."""
    report.user_properties.append((name, value))
    item.user_properties.append((name, value))


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    """An error of the harness during a test is an ERROR, not a FAIL."""
    if report.when == "call" and report.failed and any(
            name == PROP_ERROR_KIND and value in ERROR_KINDS for name, value in report.user_properties):
        return "error", "E", "ERROR"
    return None
