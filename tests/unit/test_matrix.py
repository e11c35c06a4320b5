"""``harness test`` cells end to end, without a kernel: real pytest processes with the real plugin,
over a stand-in suite whose conftest fakes the stages and the VM (tests/data/report/cell_*.py)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import results as report
from harness.errors import InputError
from harness.kernel import config
from harness.results import (
    BootRecord,
    BuildRecord,
    KernelRun,
    ResultsDir,
    SessionRecords,
    StageRecord,
    Summary,
)
from harness.run import matrix
from harness.run.matrix import Cell

DATA = Path(__file__).resolve().parent.parent / "data" / "report"
FIXES = "rcfs-fixes/default"
OVERRIDE = "rcfs-fixes/default[RCFS_TESTSS=y]"


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    d = tmp_path / "suite"
    d.mkdir()
    (d / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    shutil.copy(DATA / "cell_conftest.py", d / "conftest.py")
    shutil.copy(DATA / "cell_suite.py", d / "test_cell.py")
    return d


def _run(tmp_path: Path, suite: Path, *cells: Cell) -> tuple[Summary, int, Path]:
    path, code = matrix.run(list(cells), results_parent=tmp_path / "results", suite=suite, jobs=1)
    return report.load_summary(path), code, path


def _tests_by_kernel(summary: Summary) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for t in summary.tests:
        out.setdefault(summary.label_of(t.build_id), {})[t.path.rsplit("::", 1)[1]] = t.label
    return out


def test_a_cell_is_one_kernel_and_overrides_get_a_cell_of_their_own(tmp_path: Path, suite: Path) -> None:
    summary, code, path = _run(tmp_path, suite, Cell("default", "rcfs-fixes"))
    assert code == 0 and summary.interrupted is None
    builds = {b.kernel: b for b in summary.builds}
    assert set(builds) == {FIXES, OVERRIDE}
    over = builds[OVERRIDE]
    # the config is the config, not what follows the "/" of the label
    assert (over.id, over.series, over.config, over.overrides) == (
        f"harness:{OVERRIDE}", "rcfs-fixes", "default", ["CONFIG_RCFS_TESTSS=y"])
    tests = _tests_by_kernel(summary)
    assert tests[OVERRIDE] == {"test_with_an_override": "PASS"}  # on its own kernel, not the last one
    assert tests[FIXES] == {f"test_plain[{n}]": "PASS" for n in range(12)}
    assert sorted(p.name for p in (path / "cells").iterdir()) == [
        "rcfs-fixes-default", "rcfs-fixes-default-RCFS_TESTSS=y"]
    assert [b.build_id for b in summary.boots] == [f"harness:{FIXES}", f"harness:{OVERRIDE}"]


def test_tests_the_user_deselected_are_not_reported_as_not_run(tmp_path: Path, suite: Path) -> None:
    path, code = matrix.run([Cell("default", "rcfs-fixes")], results_parent=tmp_path / "results",
                            suite=suite, extra=["-k", "test_plain and 1"], jobs=1)
    summary = report.load_summary(path)
    assert code == 0
    assert _tests_by_kernel(summary) == {FIXES: {f"test_plain[{n}]": "PASS" for n in (1, 10, 11)}}
    assert [p.name for p in (path / "cells").iterdir()] == ["rcfs-fixes-default"]  # no override cell


def test_an_image_failure_is_one_error_per_cell_and_the_tests_are_not_run(
        tmp_path: Path, suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_IMAGE_FAILS", "1")
    summary, code, path = _run(tmp_path, suite, Cell("default", "rcfs-fixes"))
    assert code == 2
    assert {b.kernel: b.status for b in summary.builds} == {FIXES: "PASS", OVERRIDE: "PASS"}
    assert [(summary.label_of(s.build_id), s.stage, s.status) for s in summary.stages] == [
        (FIXES, "image", "ERROR"), (OVERRIDE, "image", "ERROR")]
    tests = [t for t in summary.tests if t.build_id == f"harness:{FIXES}"]
    assert len(tests) == 12 and {t.status for t in tests} == {"MISS"}
    assert {t.not_run for t in tests} == {f"the image stage of {FIXES} failed"}
    counts = summary.counts()
    assert (counts["ERROR"], counts["MISS"], counts["stages_failed"]) == (0, 13, 2)
    suites = {s.get("name"): s for s in ET.parse(path / "junit.xml").getroot().iter("testsuite")}
    for name in (FIXES, OVERRIDE):
        errors = [c.get("name") for c in suites[name].iter("testcase") if c.find("error") is not None]
        assert errors == ["image"]  # one ERROR naming the stage, not one per test
    html = (path / "index.html").read_text()
    assert 'id="row-stage-image"' in html and "NOT RUN" in html


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_stops_the_cells_and_writes_what_ran(
        tmp_path: Path, suite: Path, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals) -> None:
    progress = tmp_path / "progress"
    monkeypatch.setenv("FAKE_PROGRESS", str(progress))
    monkeypatch.setenv("FAKE_PAUSE", "0.5")
    sent = threading.Event()

    def interrupt_after_two_tests() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # a third test has begun its teardown: the first two are over
            if progress.is_file() and len(progress.read_text().splitlines()) >= 3:
                os.kill(os.getpid(), sig)
                sent.set()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=interrupt_after_two_tests, daemon=True)
    thread.start()
    summary, code, path = _run(tmp_path, suite, Cell("default", "rcfs-fixes"), Cell("default", "rcfs-testss"))
    thread.join(5)
    assert sent.is_set()
    assert code == 128 + sig
    assert summary.interrupted == sig.name
    assert report.exit_code(summary) == code
    tests = [t for t in summary.tests if t.build_id == f"harness:{FIXES}"]
    ran = [t for t in tests if t.status == "PASS"]
    missed = [t for t in tests if t.status == "MISS"]
    assert len(ran) >= 2 and missed and len(ran) + len(missed) == 12
    assert {t.not_run for t in missed} == {f"interrupted by {sig.name}"}
    builds = {b.kernel: b for b in summary.builds}
    assert builds[FIXES].status == "PASS"
    never = builds["rcfs-testss/default"]
    assert never.status == "MISS"
    assert never.message is not None and "before this cell started" in never.message
    assert (path / "junit.xml").is_file()
    assert 'id="interrupted"' in (path / "index.html").read_text()
    assert not (path / "cells" / "rcfs-testss-default").exists()


# --- the typed handoff --------------------------------------------------------------------


def _two_kernels() -> SessionRecords:
    runs = []
    for label, overrides in ((FIXES, []), (OVERRIDE, ["CONFIG_RCFS_TESTSS=y"])):
        run = KernelRun(label=label, config="default", series="rcfs-fixes", overrides=overrides)
        run.build = BuildRecord.new("rcfs-fixes", "default", "PASS", kernel=label, overrides=overrides,
                                    cached=True)
        run.boots.append(BootRecord(id=f"{run.build_id}:boot1", build_id=run.build_id, status="PASS",
                                    resumed=True))
        runs.append(run)
    runs[1].stages.append(StageRecord(id="s", build_id=runs[1].build_id, stage="image", status="PASS"))
    return SessionRecords(kernels=runs, tests={"test_a.py::t1": FIXES, "test_a.py::t2": OVERRIDE,
                                               "test_a.py::t3": OVERRIDE},
                          done=["test_a.py::t1", "test_a.py::t2"], other_overrides=[["CONFIG_X=1"]],
                          interrupted=None)


def test_session_records_are_read_back_as_the_same_dataclasses(tmp_path: Path) -> None:
    records = _two_kernels()
    records.write(tmp_path / "records.json")
    assert SessionRecords.load(tmp_path / "records.json") == records
    for bad in ('[]', '{"version": 1, "kernels": [{"label": 1}]}',
                '{"version": 1, "tests": {"t": 3}}', '{"version": 1, "interrupted": "SIGFOO"}'):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(InputError):
            SessionRecords.load(tmp_path / "bad.json")


def test_two_kernels_in_one_session_each_test_on_its_own(tmp_path: Path) -> None:
    records = _two_kernels()
    cell = tmp_path / "cell"
    cell.mkdir()
    records.write(cell / "records.json")
    (cell / "junit.xml").write_text(
        '<testsuite name="pytest">'
        '<testcase classname="test_a" name="t1" time="0.1"><properties>'
        '<property name="nodeid" value="test_a.py::t1"/></properties></testcase>'
        '<testcase classname="test_a" name="t2" time="0.1"><properties>'
        '<property name="nodeid" value="test_a.py::t2"/></properties></testcase></testsuite>')
    outcome = matrix.CellOutcome(Cell("default", "rcfs-fixes"), 1, 1.0, cell / "junit.xml",
                                 cell / "records.json", cell / "pytest.log")
    results = ResultsDir(tmp_path / "results")
    matrix.collect(results, outcome)
    s = results.summary
    assert [(b.kernel, b.config, b.overrides) for b in s.builds] == [
        (FIXES, "default", []), (OVERRIDE, "default", ["CONFIG_RCFS_TESTSS=y"])]
    assert [(t.path, s.label_of(t.build_id), t.status) for t in s.tests] == [
        ("test_a.py::t1", FIXES, "PASS"), ("test_a.py::t2", OVERRIDE, "PASS"),
        ("test_a.py::t3", OVERRIDE, "MISS")]  # selected, never reported: not forgotten
    assert s.tests[2].not_run is not None and "pytest exited 1" in s.tests[2].not_run
    assert report.exit_code(s) == 2


def test_a_cell_that_left_nothing_is_an_error(tmp_path: Path) -> None:
    outcome = matrix.CellOutcome(Cell("default", "rcfs-fixes"), 3, 1.0, tmp_path / "junit.xml",
                                 tmp_path / "records.json", tmp_path / "pytest.log")
    results = ResultsDir(tmp_path / "results")
    matrix.collect(results, outcome)
    (build,) = results.summary.builds
    assert (build.kernel, build.status) == (FIXES, "ERROR")
    assert build.message is not None and "pytest exited 3 without results" in build.message


def test_a_two_cpu_cell_takes_two_slots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With 2 slots, two 1-CPU cells run together, a 2-CPU cell runs alone."""
    from harness.kernel.config import ConfigDef

    defs = {"up": ConfigDef("up", "t.j2", ""), "smp": ConfigDef("smp", "t.j2", "", cpus=2)}
    monkeypatch.setattr(config, "load_defs", lambda *a, **k: defs)
    running: set[str] = set()
    together: list[set[str]] = []

    class FakePopen:
        def __init__(self, label: str) -> None:
            self.label, self.polls = label, 0
            self.returncode: int | None = None

        def poll(self) -> int | None:
            self.polls += 1
            if self.polls > 2:
                self.returncode = 0
                running.discard(self.label)
            return self.returncode

    def start(cell: matrix.Cell, *args: object) -> object:
        running.add(cell.label)
        together.append(set(running))
        return types.SimpleNamespace(cell=cell, popen=FakePopen(cell.label), signalled=None)

    monkeypatch.setattr(matrix, "_start_cell", start)
    monkeypatch.setattr(matrix, "_finish_cell", lambda r: r.cell)
    monkeypatch.setattr(matrix, "_more_cells", lambda outcome: [])
    monkeypatch.setattr(matrix, "POLL", 0.0)
    cells = [matrix.Cell("up", "a"), matrix.Cell("up", "b"), matrix.Cell("smp", "a"), matrix.Cell("up", "c")]
    done, never = matrix.run_cells(cells, tmp_path, tmp_path, (), 2, matrix.Stop())
    assert never == [] and len(done) == 4
    assert {"a/up", "b/up"} in together  # two 1-CPU cells at once
    assert all(s == {"a/smp"} for s in together if "a/smp" in s)  # the SMP cell alone
