"""A sample results directory built from a real pytest run (shared by the report tests)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from harness import proc
from harness import results as report
from harness.results import BootRecord, BuildRecord, Checkout, PatchFile, ResultsDir

DATA = Path(__file__).resolve().parent / "data" / "report"
GUEST = "test_guest.py"


def make_junit(work: Path) -> Path:
    """A JUnit file from a real pytest run of tests/data/report/guest_suite.py."""
    shutil.copy(DATA / "guest_suite.py", work / GUEST)
    (work / "pytest.ini").write_text("[pytest]\n")
    out = work / "junit.xml"
    result = proc.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(work),
         "-o", "junit_logging=all", f"--junitxml={out}", GUEST],
        cwd=work, check=False, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # some tests fail, on purpose
    return out


def _build(series: str = "rcfs", config: str = "default", status: report.Status = "PASS",
           **kw: Any) -> BuildRecord:
    return BuildRecord.new(series, config, status, duration=312.5, log_path=str(DATA / "build.log"),
                           bzimage_path="/cache/builds/x/out/arch/i386/boot/bzImage", warnings=1, **kw)


def _results(tmp_path: Path, junit_file: Path, name: str = "run") -> ResultsDir:
    """Two kernels: rcfs/default (tests from the real run) and rcfs/debug (boot panicked)."""
    rd = ResultsDir(tmp_path / name)
    rd.add_checkout(Checkout(id="harness:rcfs", source_id="kernel-org-2.6.20", series="rcfs",
                             patches=[PatchFile("0001-rcfs.patch", "ab" * 32)]))
    good = rd.add_build(_build(checkout_id="harness:rcfs"))
    rd.add_boot(BootRecord(id=f"{good.id}:boot", build_id=good.id, status="PASS", duration=3.2,
                           console_log_path=str(DATA / "console-panic.log")))
    rd.add_tests_from_junit(junit_file, good.id)
    bad = rd.add_build(_build(config="debug", checkout_id="harness:rcfs"))
    rd.add_boot(BootRecord(id=f"{bad.id}:boot", build_id=bad.id, status="FAIL", duration=1.5,
                           console_log_path=str(DATA / "console-panic.log"),
                           message="Kernel panic - not syncing: No init found <init>"))
    rd.write()
    return rd
