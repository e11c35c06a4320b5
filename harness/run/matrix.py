"""``harness test``: run the rcfs suite per kernel, as a matrix, sharded, into a results directory.

A *cell* is one (config, series) pair: one kernel, one pytest run, one VM
boot.  Tests that ask for a config with ``@pytest.mark.kernel(config=...)``
belong to that config's cell; the others belong to ``default``.  The matrix
(``[matrix]`` in ``kernel-configs/configs.toml``) is every config × every
series it lists.  ``--shard I/N`` keeps cells ``I, I+N, I+2N...`` of the
sorted matrix, so N machines can split it and ``harness report merge``
combines their results directories.

Cells run as separate pytest processes, two at a time by default (one per
core).  Each writes JUnit XML and the plugin's build/boot records; this
module turns them into one results directory (:mod:`harness.results`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import proc, resources
from harness import results as report
from harness.errors import InputError
from harness.kernel import config, patches
from harness.run import pytest_cmd


@dataclass(frozen=True, order=True)
class Cell:
    config: str
    series: str

    @property
    def label(self) -> str:
        return f"{self.series}/{self.config}"

    @property
    def slug(self) -> str:
        return f"{self.series}-{self.config}"


@dataclass(frozen=True)
class CellOutcome:
    cell: Cell
    returncode: int
    duration: float
    junit: Path
    records: Path
    log: Path


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


def pytest_argv(cell: Cell, out: Path, suite: Path, extra: Sequence[str]) -> list[str]:
    return pytest_cmd.pytest_argv(
        [str(suite)], config=cell.config, series=cell.series, suite=suite,
        extra=["--kernel-cell", f"--junitxml={out / 'junit.xml'}", "-o", "junit_logging=all",
               "-o", "junit_family=xunit2", f"--harness-records={out / 'records.json'}",
               "-q", "-rfEx", *extra])


def run_cell(cell: Cell, cells_dir: Path, suite: Path, extra: Sequence[str],
             lock: threading.Lock) -> CellOutcome:
    out = cells_dir / cell.slug
    out.mkdir(parents=True, exist_ok=True)
    log = out / "pytest.log"
    with lock:
        print(f"==> {cell.label}: started", file=sys.stderr, flush=True)
    start = time.monotonic()
    with log.open("w") as logf:
        result = proc.stream(pytest_argv(cell, out, suite, extra), log_to=logf)
    duration = time.monotonic() - start
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
    with lock:
        print(f"==> {cell.label}: {tail[0] if tail else 'no output'} ({duration:.1f}s)",
              file=sys.stderr, flush=True)
    return CellOutcome(cell, result.returncode, duration, out / "junit.xml", out / "records.json", log)


def collect(results: report.ResultsDir, outcome: CellOutcome) -> None:
    """Turn one cell's records and JUnit XML into report records."""
    records: dict[str, Any] = {}
    if outcome.records.is_file():
        records = json.loads(outcome.records.read_text())
    build_id = f"{report.ORIGIN}:{outcome.cell.label}"
    for label, kernel in records.items():
        build = kernel.get("build") or {}
        kid = f"{report.ORIGIN}:{label}"
        results.add_build(report.BuildRecord.new(
            kernel["series"], label.split("/", 1)[1], build.get("status", "ERROR"),
            duration=build.get("duration"), log_path=build.get("log"),
            bzimage_path=build.get("bzimage"), warnings=build.get("warnings", 0),
            message=build.get("message")))
        for n, boot in enumerate(kernel.get("boots", []), 1):
            results.add_boot(report.BootRecord(
                id=f"{kid}:boot{n}", build_id=kid, status=boot["status"],
                duration=boot.get("duration"), console_log_path=boot.get("console"),
                message=boot.get("message")))
        build_id = kid
    if outcome.junit.is_file():
        results.add_tests_from_junit(outcome.junit, build_id)
    elif outcome.returncode not in (0, 5):
        results.add_build(report.BuildRecord.new(
            outcome.cell.series, outcome.cell.config, "ERROR",
            message=f"pytest exited {outcome.returncode} without results; see {outcome.log}",
            log_path=str(outcome.log)))


def run(cells: Sequence[Cell], *, results_parent: Path, suite: Path | None = None,
        extra: Sequence[str] = (), jobs: int | None = None) -> tuple[Path, int]:
    """Run ``cells`` (in parallel, ``jobs`` at a time); returns (results dir, exit code)."""
    validate(cells)
    suite = suite or resources.suite("rcfs")
    results = report.ResultsDir.create(results_parent)
    cells_dir = results.path / "cells"
    jobs = jobs or min(len(cells), max(1, os.cpu_count() or 1)) or 1
    lock = threading.Lock()
    print(f"harness: {len(cells)} kernel(s), {jobs} at a time: "
          f"{', '.join(c.label for c in cells)}", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(lambda c: run_cell(c, cells_dir, suite, extra, lock), cells))
    for outcome in outcomes:
        collect(results, outcome)
    results.write()
    return results.path, report.exit_code(results.summary)


def print_summary(path: Path) -> None:
    summary = report.load_summary(path)
    counts = summary.counts()
    print("harness: " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n), file=sys.stderr)
    for build in summary.builds:
        tests = [t for t in summary.tests if t.build_id == build.id]
        by: dict[str, int] = {}
        for t in tests:
            by[t.label] = by.get(t.label, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(by.items()))
        print(f"  {build.kernel:28} build {build.status:5} {detail}", file=sys.stderr)
    print(f"harness: report {path / report.INDEX_HTML}", file=sys.stderr)
