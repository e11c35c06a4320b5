"""``harness test``: run the rcfs suite per kernel, as a matrix, sharded, into a results directory.

A *cell* is one kernel: a (config, series) pair, plus the ``set=`` overrides
of the tests that ask for some; one pytest run, one kernel, one VM at a time.
Tests that ask for a config with ``@pytest.mark.kernel(config=...)`` belong
to that config's cell; the others belong to ``default``.  A test that also
asks for overrides (``set={...}``) runs in a cell of its own, (config, series,
overrides): the cell without overrides lists the overrides its tests ask for
(in its records) and ``harness test`` then runs that cell too, in the same
shard.  So a cell never holds two kernels.  The matrix (``[matrix]`` in
``kernel-configs/configs.toml``) is every config × every series it lists.
``--shard I/N`` keeps cells ``I, I+N, I+2N...`` of the sorted matrix, so N
machines can split it and ``harness report merge`` combines their results.

Cells run as separate pytest processes, two at a time by default (one per
core).  Each writes JUnit XML and the plugin's typed session records
(:mod:`harness.results.session`); this module turns them into one results
directory (:mod:`harness.results`), each test on the kernel it ran on.

SIGINT and SIGTERM: the cells that run get the same signal (the plugin kills
their VMs and stops pytest, which writes what ran), cells not yet started are
not started, and the results directory is written all the same, marked
interrupted; tests that had not finished and cells that never started are
reported as not run.  A cell still running :data:`GRACE` seconds after the
signal (or at a second signal) is killed.  The exit code is 128 + the signal.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from harness import proc, resources
from harness import results as report
from harness.coverage import report as coverage_report
from harness.errors import InputError
from harness.kernel import config, patches
from harness.results import SessionRecords, build_id_for, record_id
from harness.run import pytest_cmd
from harness.run.target import KernelSpec

log = logging.getLogger(__name__)

GRACE = 10.0
"""Seconds a signalled cell has to stop and write what ran before it is killed."""
POLL = 0.1
COVERAGE_DIR = "coverage"
"""A cell's folder of VM traces with ``harness test --coverage``."""


@dataclass(frozen=True, order=True)
class Cell:
    config: str
    series: str
    overrides: tuple[str, ...] = ()

    @property
    def spec(self) -> KernelSpec:
        return KernelSpec(config=self.config, series=self.series, overrides=self.overrides)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._=,-]+", "-", self.label.replace("/", "-")).strip("-")


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    returncode: int
    duration: float
    junit: Path
    records: Path
    log: Path
    interrupted: str | None = None  # the signal the cell was sent


def load_matrix(directory: Path | None = None) -> list[Cell]:
    """The ``[matrix]`` of the highest-priority ``configs.toml`` that has one."""
    tables = [(path, data) for path, data in config.load_tables(directory) if "matrix" in data]
    if not tables:
        raise InputError("no configs.toml on the config search path has a [matrix]")
    path, data = tables[-1]
    matrix = data["matrix"]
    configs = matrix.get("configs", []) if isinstance(matrix, dict) else []
    series = matrix.get("series", []) if isinstance(matrix, dict) else []
    if not configs or not series:
        raise InputError(f"{path}: [matrix] needs non-empty 'configs' and 'series' lists")
    return sorted(Cell(c, s) for c in configs for s in series)


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise InputError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def shard(cells: Sequence[Cell], spec: str) -> list[Cell]:
    index, total = parse_shard(spec)
    ordered = sorted(cells)
    return [cell for i, cell in enumerate(ordered) if i % total == index - 1]


def validate(cells: Sequence[Cell]) -> None:
    """Unknown config or series names are refused before anything runs."""
    known_configs = config.load_defs()
    for cell in cells:
        if cell.config not in known_configs:
            raise InputError(f"unknown config {cell.config!r}; expected one of: "
                             f"{', '.join(sorted(known_configs))}")
        patches.load_series(cell.series)


def pytest_argv(cell: Cell, out: Path, suite: Path, extra: Sequence[str],
                coverage: bool = False) -> list[str]:
    sets = [arg for o in cell.overrides for arg in ("--kernel-set", o)]
    if coverage:  # each cell traces into its own directory; run() takes the union
        sets.append(f"--kernel-coverage={out / COVERAGE_DIR}")
    return pytest_cmd.pytest_argv(
        [str(suite)], config=cell.config, series=cell.series, suite=suite,
        extra=["--kernel-cell", *sets, f"--junitxml={out / 'junit.xml'}", "-o", "junit_logging=all",
               "-o", "junit_family=xunit2", f"--harness-records={out / report.RECORDS_JSON}",
               "-q", "-rfEx", *extra])


# --- signals ------------------------------------------------------------------------


@dataclass
class Stop:
    """SIGINT/SIGTERM received while cells run: the first one's number, when, and how many."""

    signum: int | None = None
    when: float = 0.0
    count: int = 0

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum, self.when = signum, time.monotonic()


@contextmanager
def catching_signals(stop: Stop) -> Iterator[Stop]:
    """Route SIGINT and SIGTERM to ``stop`` in the block (from the main thread; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- running cells ------------------------------------------------------------------


@dataclass
class _Running:
    cell: Cell
    out: Path
    log: Path
    logf: IO[bytes]
    popen: subprocess.Popen[bytes]
    start: float = field(default_factory=time.monotonic)
    signalled: str | None = None


def _start_cell(cell: Cell, cells_dir: Path, suite: Path, extra: Sequence[str],
                coverage: bool = False) -> _Running:
    out = cells_dir / cell.slug
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "pytest.log"
    argv = pytest_argv(cell, out, suite, extra, coverage)
    logf = log_path.open("wb")
    logf.write(f"$ {proc.format_argv(argv)}\n".encode())
    logf.flush()
    print(f"==> {cell.label}: started", file=sys.stderr, flush=True)
    try:
        # its own session: a terminal's Ctrl-C reaches the harness only, which passes it on once
        popen = proc.background(argv, log_to=logf, new_session=True)
    except BaseException:
        logf.close()
        raise
    return _Running(cell, out, log_path, logf, popen)


def _finish_cell(r: _Running) -> CellOutcome:
    r.logf.close()
    duration = time.monotonic() - r.start
    tail = [line for line in r.log.read_text(errors="replace").splitlines() if line.strip()][-1:]
    print(f"==> {r.cell.label}: {tail[0] if tail else 'no output'} ({duration:.1f}s)",
          file=sys.stderr, flush=True)
    rc = r.popen.returncode if r.popen.returncode is not None else -1
    return CellOutcome(r.cell, rc, duration, r.out / "junit.xml", r.out / report.RECORDS_JSON, r.log,
                       r.signalled)


def _more_cells(outcome: CellOutcome) -> list[Cell]:
    """The cells of the other overrides the tests of ``outcome``'s cell ask for."""
    if not outcome.records.is_file():
        return []
    try:
        session = SessionRecords.load(outcome.records)
    except InputError:
        return []
    return [Cell(outcome.cell.config, outcome.cell.series, tuple(o)) for o in session.other_overrides]


def run_cells(cells: Sequence[Cell], cells_dir: Path, suite: Path, extra: Sequence[str], jobs: int,
              stop: Stop, coverage: bool = False) -> tuple[list[CellOutcome], list[Cell]]:
    """Run ``cells``, ``jobs`` slots at a time, until done or ``stop`` has a signal.

    A cell takes as many slots as its VMs have vCPUs (a ``cpus = 2`` config
    such as ``debug-smp`` takes two: under TCG each vCPU is a busy host
    thread), so an SMP cell never shares the cores with another cell it
    would starve; a cell that needs more slots than there are runs alone.
    Returns the outcomes of the cells that ran and the cells never started.
    """
    defs = config.load_defs()

    def slots(cell: Cell) -> int:
        found = defs.get(cell.config)
        return min(jobs, found.cpus if found is not None else 1)

    pending = collections.deque(cells)
    seen = set(cells)
    running: list[_Running] = []
    outcomes: list[CellOutcome] = []
    try:
        while pending or running:
            while (pending and stop.signum is None
                   and sum(slots(r.cell) for r in running) + slots(pending[0]) <= jobs):
                running.append(_start_cell(pending.popleft(), cells_dir, suite, extra, coverage))
            if stop.signum is not None:
                _pass_on(stop, running)
            for r in list(running):
                if r.popen.poll() is None:
                    continue
                running.remove(r)
                outcome = _finish_cell(r)
                outcomes.append(outcome)
                for cell in _more_cells(outcome):
                    if cell not in seen:
                        seen.add(cell)
                        pending.append(cell)
            if stop.signum is not None and not running:
                break
            time.sleep(POLL)
    finally:
        for r in running:  # an exception of our own: leave nothing running
            if r.popen.poll() is None:
                r.popen.terminate()
                try:
                    r.popen.wait(timeout=GRACE)
                except subprocess.TimeoutExpired:
                    r.popen.kill()
            r.popen.wait()
            r.logf.close()
    return outcomes, list(pending)


def _pass_on(stop: Stop, running: list[_Running]) -> None:
    """Send the signal to every running cell once; kill those past :data:`GRACE` or at a second signal."""
    assert stop.signum is not None and stop.name is not None
    late = stop.count > 1 or time.monotonic() - stop.when > GRACE
    for r in running:
        if r.signalled is None:
            r.signalled = stop.name
            r.popen.send_signal(stop.signum)
        elif late and r.popen.poll() is None:
            log.warning("%s: still running after %s; killing it", r.cell.label, stop.name)
            r.popen.kill()
            r.popen.wait()


# --- results --------------------------------------------------------------------------


def collect(results: report.ResultsDir, outcome: CellOutcome) -> None:
    """Turn one cell's session records and JUnit XML into report records."""
    cell_build = build_id_for(outcome.cell.label)
    session: SessionRecords | None = None
    if outcome.records.is_file():
        try:
            session = SessionRecords.load(outcome.records)
        except InputError as exc:
            log.warning("%s", exc)
    if session is not None:
        for kernel in session.kernels:
            if kernel.build is not None:
                results.add_build(kernel.build)
            for boot in kernel.boots:
                results.add_boot(boot)
            for stage in kernel.stages:
                results.add_stage(stage)
    planned = session.tests if session is not None else {}
    kernels = {nodeid: build_id_for(label) for nodeid, label in planned.items()}
    signal_name = (session.interrupted if session is not None else None) or outcome.interrupted
    why = (f"interrupted by {signal_name}" if signal_name
           else f"pytest exited {outcome.returncode} before the test ended; see {outcome.log}")
    done = set(session.done) if session is not None else None
    reported: set[str] = set()
    if outcome.junit.is_file():
        try:
            tests = report.parse_junit(outcome.junit, cell_build, kernels=kernels)
        except InputError as exc:
            log.warning("%s", exc)
            tests = []
        for t in tests:
            if done is not None and t.path in planned and t.path not in done:
                # begun, never ended: JUnit shows such a test without an outcome, as if it passed
                t = dataclasses.replace(t, status="MISS", xfail=None, not_run=why)
            reported.add(results.add_test(t).path)
    for nodeid, build_id in kernels.items():
        if nodeid not in reported:
            results.add_test(report.TestRecord(id=record_id(build_id, nodeid), build_id=build_id,
                                               path=nodeid, status="MISS", not_run=why))
    if session is None and not reported and outcome.returncode not in (0, 5):
        results.add_build(report.BuildRecord.new(
            outcome.cell.series, outcome.cell.config, "MISS" if signal_name else "ERROR",
            kernel=outcome.cell.label, overrides=list(outcome.cell.overrides),
            message=(f"interrupted by {signal_name} before the cell reported anything" if signal_name
                     else f"pytest exited {outcome.returncode} without results; see {outcome.log}"),
            log_path=str(outcome.log)))


def not_started(results: report.ResultsDir, cell: Cell, signal_name: str) -> None:
    results.add_build(report.BuildRecord.new(
        cell.series, cell.config, "MISS", kernel=cell.label, overrides=list(cell.overrides),
        message=f"not run: the run was interrupted by {signal_name} before this cell started"))


def run(cells: Sequence[Cell], *, results_parent: Path = Path("results"), suite: Path | None = None,
        extra: Sequence[str] = (), jobs: int | None = None,
        into: report.ResultsDir | None = None, coverage: bool = False) -> tuple[Path, int]:
    """Run ``cells`` (``jobs`` at a time) into a new results directory under ``results_parent``
    (or into the directory ``into``, which may hold records already); returns (its path, exit code).
    ``coverage``: trace every VM and write ``coverage.json``/``.html`` (:mod:`harness.coverage`)."""
    validate(cells)
    suite = suite or resources.suite("rcfs")
    jobs = jobs or min(len(cells), max(1, os.cpu_count() or 1)) or 1
    with catching_signals(Stop()) as stop:
        results = into if into is not None else report.ResultsDir.create(results_parent)
        print(f"harness: {len(cells)} kernel(s), {jobs} at a time: "
              f"{', '.join(c.label for c in cells)}", file=sys.stderr)
        outcomes, never = run_cells(cells, results.path / "cells", suite, extra, jobs, stop, coverage)
        for outcome in outcomes:
            collect(results, outcome)
        if coverage:
            found = coverage_report.write(results.path, [o.junit.parent / COVERAGE_DIR for o in outcomes])
            print(f"harness: patch coverage\n{coverage_report.headline(found)}", file=sys.stderr)
            results.links.append((coverage_report.COVERAGE_HTML, "Patch coverage: which added lines ran"))
        if stop.name is not None:
            for cell in never:
                not_started(results, cell, stop.name)
            results.summary.interrupted = stop.name
            print(f"harness: interrupted by {stop.name}: {len(outcomes)} cell(s) stopped or done, "
                  f"{len(never)} not started; writing the results so far", file=sys.stderr)
        results.write()
    return results.path, report.exit_code(results.summary)


def print_summary(path: Path) -> None:
    summary = report.load_summary(path)
    counts = summary.counts()
    print("harness: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n), file=sys.stderr)
    if summary.interrupted:
        print(f"harness: INTERRUPTED by {summary.interrupted}: partial results", file=sys.stderr)
    for build in summary.builds:
        tests = [t for t in summary.tests if t.build_id == build.id]
        by: dict[str, int] = {}
        for t in tests:
            by[t.label] = by.get(t.label, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(by.items()))
        stages = "".join(f" {s.stage} {s.status}" for s in summary.stages if s.build_id == build.id)
        print(f"  {build.kernel:28} build {build.status:5}{stages} {detail}", file=sys.stderr)
    print(f"harness: report {path / report.INDEX_HTML}", file=sys.stderr)
