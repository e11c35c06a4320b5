"""``harness repro NODEID``: run one test on a kernel (or read its trace from a results directory) and
print its reproducer script."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness import proc, resources
from harness.errors import InputError, StageError
from harness.kernel import config, patches
from harness.results import RECORDS_JSON, SessionRecords
from harness.results.guestlog import TestTrace
from harness.review import repro
from harness.run import pytest_cmd


def _matches(trace: TestTrace, nodeid: str) -> bool:
    """The same test, whatever folder prefix either id has (``tests/rcfs/test_x.py::t``)."""
    a, b = trace.nodeid, nodeid
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def from_results(directory: Path, nodeid: str) -> TestTrace:
    """The trace of ``nodeid`` recorded in a results directory (``cells/*/records.json``)."""
    found = []
    for path in sorted(directory.glob(f"cells/*/{RECORDS_JSON}")):
        found += [t for t in SessionRecords.load(path).traces.values() if _matches(t, nodeid)]
    if not found:
        raise InputError(f"{directory}: no recorded test {nodeid!r} (expected a results directory of "
                         "harness test or harness review, and a node id it ran)")
    return next((t for t in found if t.failed), found[0])


def from_run(nodeid: str, series: str, config_name: str) -> TestTrace:
    """Run ``nodeid`` once on (``config_name``, ``series``) and return its trace."""
    patches.load_series(series)
    if config_name not in config.load_defs():
        raise InputError(f"--config {config_name!r}: unknown config")
    target, suite = pytest_cmd.resolve_nodeid(nodeid)
    if suite is None and not Path(nodeid.partition("::")[0]).exists():
        raise InputError(f"{nodeid!r}: no such test file (expected a node id of the rcfs suite, "
                         "e.g. test_rmdir.py::test_rmdir_with_task_is_ebusy)")
    with tempfile.TemporaryDirectory(prefix="harness-repro-") as tmp:
        records = Path(tmp) / RECORDS_JSON
        argv = pytest_cmd.pytest_argv([target], config=config_name, series=series,
                                      suite=suite or resources.suite("rcfs"),
                                      extra=["--runxfail", f"--harness-records={records}", "-q"])
        with (Path(tmp) / "pytest.log").open("w") as log:
            result = proc.run(argv, check=False, log_to=log)
        if not records.is_file():
            tail = (Path(tmp) / "pytest.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise StageError(f"pytest exited {result.returncode} without records: " + " | ".join(tail),
                             stage="test")
        traces = list(SessionRecords.load(records).traces.values())
    if not traces:
        raise InputError(f"{nodeid!r}: pytest ran no kernel test of that id on {series}/{config_name}")
    return traces[0]


def main(nodeid: str, series: str, config_name: str, results: str | None) -> int:
    trace = from_results(Path(results), nodeid) if results else from_run(nodeid, series, config_name)
    kernel = trace.kernel or f"{series}/{config_name}"
    hint = f"harness run --config {kernel.rsplit('/', 1)[-1]} --series {kernel.split('/', 1)[0]} " \
           "-- sh -s < SCRIPT"
    sys.stdout.write(repro.script(trace, kernel=kernel, run_hint=hint))
    if not trace.failed:
        print(f"harness: {trace.nodeid} passed on {kernel}: the script replays its commands and shows "
              "the bug only if the kernel reports a problem", file=sys.stderr)
    return 0
