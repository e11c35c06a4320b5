"""SIGINT and SIGTERM to ``harness test`` on the real kernel: the run stops, QEMU is reaped, and the
results directory holds what ran, marked interrupted.

``harness test --config default --series rcfs-fixes`` runs until the cell's
pytest log shows a few finished tests; then SIGINT goes to the harness process
alone, or SIGTERM to its whole process group (as ``kill -TERM -PGID`` or a CI
runner does).  The QEMUs of this run are told from other runs on the same
cache by an environment tag that every child inherits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import resources
from harness.kernel.source import Source
from harness.machine.vm import running_qemus
from harness.run import pytest_cmd, target

REPO = Path(__file__).resolve().parents[2]
TAG = "HARNESS_INTERRUPT_TAG"
CELL = "rcfs-fixes/default"
EXIT_WITHIN = 15.0  # generous: the point is that it exits, not how fast


def tagged_pids(tag: str) -> set[int]:
    marker = f"{TAG}={tag}".encode()
    pids: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0"):
                    pids.add(int(entry.name))
    return pids


def our_qemus(tag: str) -> list[str]:
    """``running_qemus()`` lines of the QEMUs started by this run (they carry the tag)."""
    pids = tagged_pids(tag)
    return [line for line in running_qemus() if int(line.split(None, 1)[0]) in pids]


def cell_tests() -> int:
    """How many tests the cell holds, as pytest collects them for that cell (nothing is run)."""
    suite = resources.suite()
    argv = pytest_cmd.pytest_argv([str(suite)], config="default", series="rcfs-fixes", suite=suite,
                                  extra=["--kernel-cell", "--collect-only", "-q"])
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if "::" in line)


def finished_tests(results: Path) -> int:
    """Progress characters pytest -q wrote for the cell so far (one per finished test)."""
    total = 0
    for log in results.glob("*/cells/*/pytest.log"):
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()[1:]
            total += sum(line.split("[")[0].count(".") for line in lines if line.rstrip().endswith("%]")
                         or set(line.strip()) <= set(".sxXFE"))
    return total


@pytest.mark.parametrize(("sig", "whom"), [(signal.SIGINT, "process"), (signal.SIGTERM, "group")],
                         ids=["SIGINT-to-harness", "SIGTERM-to-group"])
def test_interrupting_harness_test_writes_what_ran_and_leaves_no_qemu(
        kernel_source: Source, tmp_path: Path, sig: signal.Signals, whom: str) -> None:
    target.prepare(target.KernelSpec("default", "rcfs-fixes"))  # build outside the measured run
    tag = uuid.uuid4().hex
    env = dict(os.environ, **{TAG: tag})
    env.pop("PYTEST_ADDOPTS", None)
    results = tmp_path / "results"
    stderr = tmp_path / "stderr"
    argv = [sys.executable, "-m", "harness", "test", "--config", "default", "--series", "rcfs-fixes",
            "--results", str(results)]
    with stderr.open("w") as err:
        p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while finished_tests(results) < 5:
            assert p.poll() is None, f"exited {p.returncode} before any test ran:\n{stderr.read_text()}"
            assert time.monotonic() < deadline, f"no test finished in 300 s:\n{stderr.read_text()}"
            time.sleep(0.1)
        assert our_qemus(tag), "no QEMU of this run is running while its tests run"
        if whom == "group":
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)
        sent = time.monotonic()
        try:
            code = p.wait(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"harness test still running {EXIT_WITHIN:g}s after {sig.name}")
        print(f"{sig.name} to the {whom}: exit {code} {time.monotonic() - sent:.1f}s after the signal")
        left = our_qemus(tag)
    finally:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for pid in tagged_pids(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    text = stderr.read_text()
    assert code == 128 + sig, f"exit {code}:\n{text[-3000:]}"
    assert not left, f"QEMU left behind: {left}"
    assert "Traceback" not in text, text[-3000:]
    (run,) = list(results.iterdir())
    for name in ("summary.json", "junit.xml", "index.html"):
        assert (run / name).is_file(), f"{name} missing from {run}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] == sig.name
    tests = [t for t in summary["tests"] if t["build_id"] == f"harness:{CELL}"]
    statuses = [t["status"] for t in tests]
    expected = cell_tests()
    assert len(tests) == expected, f"{len(tests)} tests reported, expected all {expected} of the cell"
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count("PASS") >= 5 and "MISS" in statuses, (counts, text[-3000:])
    assert {t["not_run"] for t in tests if t["status"] == "MISS"} == {f"interrupted by {sig.name}"}
    assert set(statuses) <= {"PASS", "MISS"}, "an interrupted test must not be reported as a result"
    assert 'id="interrupted"' in (run / "index.html").read_text()
    assert f"INTERRUPTED by {sig.name}" in text
