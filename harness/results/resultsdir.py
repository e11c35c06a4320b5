"""The results directory of a run: records added one by one, logs copied in, files written atomically.

A run writes one directory (``results/<timestamp>/`` by default)::

    summary.json    every record (harness.results.records); the source of truth, written last
    junit.xml       merged JUnit: one <testsuite> per kernel, with "build" and "boot" cases
    index.html      one static page: counts, test x kernel matrix, failure details
    logs/<kernel>/  copies of build.log and console logs the records point to

Paths in ``summary.json`` are relative to the directory when the file is
inside it (log files are copied in), so a directory can be moved, archived by
CI or merged.  Every file is written atomically (:func:`harness.cache.atomic_file`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from harness import cache
from harness.errors import InputError
from harness.results.html import render_html
from harness.results.junit import parse_junit, render_junit
from harness.results.records import (
    INDEX_HTML,
    JUNIT_XML,
    LOGS,
    SUMMARY_JSON,
    BootRecord,
    BuildRecord,
    Checkout,
    StageRecord,
    Summary,
    TestRecord,
    load_summary,
    worst,
)
from harness.results.text import MAX_EXCERPT

log = logging.getLogger("harness.results")


class ResultsDir:
    """A results directory being filled: add records, then :meth:`write`.

    Log files given by absolute path are copied into ``logs/<kernel>/`` when
    added (``copy_logs``), so the directory stands alone; records then hold
    paths relative to the directory.  A test the harness did not run
    (``not_run`` set) is recorded as MISS.
    """

    def __init__(self, path: Path, summary: Summary | None = None, *, copy_logs: bool = True) -> None:
        self.path = path.absolute()
        self.path.mkdir(parents=True, exist_ok=True)
        self.summary = summary if summary is not None else Summary()
        self.copy_logs = copy_logs
        self.links: list[tuple[str, str]] = []  # (href, text) at the top of index.html (coverage.html)

    @classmethod
    def create(cls, parent: Path = Path("results"), *, now: _dt.datetime | None = None) -> ResultsDir:
        """A new ``<parent>/<YYYYmmdd-HHMMSS>`` directory (``-2``, ``-3``... when taken)."""
        stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        with cache.disk_full_guard(parent, "creating a results directory"):
            parent.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                candidate = parent / (stamp if n == 1 else f"{stamp}-{n}")
                try:
                    candidate.mkdir()
                except FileExistsError:
                    continue
                return cls(candidate)
        raise InputError(f"{parent}: too many results directories named {stamp}")

    @classmethod
    def open(cls, path: Path) -> ResultsDir:
        """An existing results directory, to add to."""
        return cls(path, load_summary(path))

    # -- adding records

    def add_checkout(self, checkout: Checkout) -> Checkout:
        if all(c.id != checkout.id for c in self.summary.checkouts):
            self.summary.checkouts.append(checkout)
        return checkout

    def add_build(self, build: BuildRecord) -> BuildRecord:
        """Add (or replace, same id) a build; its log is copied in."""
        build.log_path = self._adopt(build.log_path, build.kernel, "build.log")
        self.summary.builds = [b for b in self.summary.builds if b.id != build.id] + [build]
        return build

    def add_boot(self, boot: BootRecord) -> BootRecord:
        """Add a boot of a build (several per build are fine); its console log is copied in."""
        boot.console_log_path = self._adopt(boot.console_log_path, self.summary.label_of(boot.build_id),
                                            "console.log")
        self.summary.boots = [b for b in self.summary.boots if b.id != boot.id] + [boot]
        return boot

    def add_stage(self, stage: StageRecord) -> StageRecord:
        """Add (or replace, same id) the record of a stage of a build; its log is copied in."""
        stage.log_path = self._adopt(stage.log_path, self.summary.label_of(stage.build_id),
                                     f"{stage.stage}.log")
        self.summary.stages = [s for s in self.summary.stages if s.id != stage.id] + [stage]
        return stage

    def add_test(self, test: TestRecord) -> TestRecord:
        """Add a test; the same path on the same build keeps the worst status, with a warning."""
        if test.not_run and test.status != "MISS":
            test = dataclasses.replace(test, status="MISS", xfail=None)
        self.summary.tests = add_test(self.summary.tests, test, where=str(self.path))
        return test

    def add_tests_from_junit(self, path: Path, build_id: str, *, limit: int = MAX_EXCERPT,
                             kernels: Mapping[str, str] | None = None) -> list[TestRecord]:
        """Add the tests of a pytest ``--junitxml`` file run on build ``build_id`` (or on
        ``kernels[node id]``)."""
        return [self.add_test(r) for r in parse_junit(path, build_id, limit=limit, kernels=kernels)]

    def _adopt(self, log_path: str | None, kernel: str, name: str) -> str | None:
        """``log_path`` relative to the directory, copying it in when it lives elsewhere."""
        if not log_path:
            return log_path
        src = Path(log_path)
        if not src.is_absolute():
            if (self.path / src).exists():
                return src.as_posix()
            src = src.absolute()
        with contextlib.suppress(ValueError):
            return src.resolve().relative_to(self.path.resolve()).as_posix()
        if not self.copy_logs or not src.is_file():
            if not src.exists():
                log.warning("%s: log file does not exist; the report links to it anyway", src)
            return str(src)
        dest = unique_path(self.path / LOGS / _slug(kernel) / name)
        cache.copy_atomic(src, dest)
        return dest.relative_to(self.path).as_posix()

    # -- writing

    def write(self) -> Path:
        """Write ``junit.xml``, ``index.html`` then ``summary.json``, each atomically; returns the dir."""
        cache.write_atomic(self.path / JUNIT_XML, render_junit(self.summary))
        html = render_html(self.summary, links=self.links) if self.links else render_html(self.summary)
        cache.write_atomic(self.path / INDEX_HTML, html)
        cache.write_atomic(self.path / SUMMARY_JSON, self.summary.to_json())
        return self.path


def add_test(tests: list[TestRecord], new: TestRecord, *, where: str) -> list[TestRecord]:
    """``tests`` with ``new`` added; a test already there on the same build keeps the worst status."""
    for i, old in enumerate(tests):
        if old.build_id == new.build_id and old.path == new.path:
            keep = new if worst(old.status, new.status) == new.status and new.status != old.status else old
            log.warning(
                "%s: test %s ran twice on %s (%s, %s): keeping %s",
                where, new.path, new.build_id, old.label, new.label, keep.label,
            )
            tests[i] = keep
            return tests
    tests.append(new)
    return tests


def unique_path(dest: Path) -> Path:
    """``dest``, or ``NAME-2.EXT``, ``NAME-3.EXT``... if taken."""
    if not dest.exists():
        return dest
    for n in range(2, 10_000):
        candidate = dest.with_name(f"{dest.stem}-{n}{dest.suffix}")
        if not candidate.exists():
            return candidate
    raise InputError(f"{dest}: too many files with this name")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
