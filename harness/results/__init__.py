"""Results: what a run found, for people and for CI (records, JUnit, the results directory, HTML).

* :mod:`~harness.results.records` -- the KCIDB-shaped records and ``summary.json``;
* :mod:`~harness.results.session` -- ``records.json``, the typed handoff from the
  pytest plugin to ``harness test``;
* :mod:`~harness.results.junit` -- pytest's JUnit in, the merged ``junit.xml`` out;
* :mod:`~harness.results.resultsdir` -- the directory: records added, logs copied in;
* :mod:`~harness.results.merge` -- ``harness report merge``;
* :mod:`~harness.results.html` -- ``index.html``;
* :mod:`~harness.results.text` -- :func:`truncate`, the one excerpt cutter.

Exit codes (:func:`exit_code`): 0 every test passed (skips, xfails and
non-strict xpasses are fine); 1 a test FAILed (a strict xpass is a failure);
2 a build, boot or stage that did not pass, a test ERROR or a test that did
not run (this wins over 1); 128 + the signal (130, 143) when the run was
interrupted.
"""

from __future__ import annotations

from harness.results.html import render_html
from harness.results.junit import clean_captured, parse_junit, render_junit
from harness.results.merge import merge
from harness.results.records import (
    ERROR_KINDS,
    INDEX_HTML,
    JUNIT_XML,
    ORIGIN,
    STATUSES,
    SUMMARY_JSON,
    BootRecord,
    BuildRecord,
    Checkout,
    PatchFile,
    StageRecord,
    Status,
    Summary,
    TestRecord,
    XFail,
    build_id_for,
    exit_code,
    load_summary,
    record_id,
    worst,
)
from harness.results.resultsdir import ResultsDir
from harness.results.session import RECORDS_JSON, KernelRun, SessionRecords
from harness.results.text import MAX_EXCERPT, truncate

__all__ = [
    "ERROR_KINDS", "INDEX_HTML", "JUNIT_XML", "MAX_EXCERPT", "ORIGIN", "RECORDS_JSON", "STATUSES",
    "SUMMARY_JSON", "BootRecord", "BuildRecord", "Checkout", "KernelRun", "PatchFile", "ResultsDir",
    "SessionRecords", "StageRecord", "Status", "Summary", "TestRecord", "XFail", "build_id_for",
    "clean_captured", "exit_code", "load_summary", "merge", "parse_junit", "record_id", "render_html",
    "render_junit", "truncate", "worst",
]
