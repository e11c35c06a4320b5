"""Failing tests grouped into distinct bugs: several tests that fail for one reason are one bug.

Each failing test gets a *signature*, the first of:

1. a kernel report during the test (oops, BUG, warning, lockdep, panic):
   ``kernel`` + the report's kind + the first function of its EIP and call
   trace that the posted patch defines (else the EIP's function) -- tests
   that crash the kernel in the same place are one bug, whatever they did.
   A lockdep report changes nothing the test sees, so a test that also
   failed on its own (its statement raised) goes by the next rules: on a
   fresh VM the first rmdir's lockdep report would otherwise make every
   test of a debug kernel one bug;
2. the failing step (the last guest command before the failure) failed with
   an errno or hung: the operation, what it was made on (a file's name, or
   "a directory") and the errno or ``TIMEOUT`` -- e.g. ``rmdir <dir> EBUSY``,
   ``umount <dir> TIMEOUT``;
3. the behaviour the test states (its xfail reason);
4. the test function and the first line of its failure message, numbers
   left out (its parametrisations that fail alike are one bug).

Tests with the same signature form one :class:`Bug`, and so do tests that
state the same behaviour (the same xfail reason) whatever their signatures:
two tests are one bug when a chain of shared signatures or stated behaviours
links them.  Tests that ERROR (the harness failed) or did not run are not
bugs (but a kernel report while the harness cleaned up after a test is);
the review lists them apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from harness.machine.console import SIDE_KINDS
from harness.results.guestlog import GuestCommand, TestTrace
from harness.results.records import TestRecord
from harness.review.locate import Location, operation
from harness.review.oops import KernelReport, SymbolMap, parse_reports

_POSTED = re.compile(r"^posted patch: ")


@dataclass
class FailedTest:
    record: TestRecord
    kernel: str  # its kernel's label
    trace: TestTrace | None
    reports: list[KernelReport] = field(default_factory=list)

    @property
    def nodeid(self) -> str:
        return self.record.path

    @property
    def function(self) -> str:
        return self.nodeid.split("::")[-1].split("[", 1)[0]

    @property
    def behaviour(self) -> str:
        return _POSTED.sub("", self.trace.behaviour) if self.trace is not None else ""

    @property
    def assertion(self) -> str:
        """The statement that failed, as pytest marks it (``>``) in the traceback ("" if none)."""
        return next((ln[1:].strip() for ln in (self.record.details or "").splitlines()
                     if ln.startswith(">") and ln[1:].strip()), "")

    @property
    def failed_on_its_own(self) -> bool:
        """The test's own statement raised (not only the plugin's check of the kernel log)."""
        return self.trace is not None and self.trace.failed_on_its_own

    @property
    def kernel_decides(self) -> bool:
        """Its kernel report is the bug it shows (see the module docstring)."""
        return bool(self.reports) and not (
            self.failed_on_its_own and all(r.kind in SIDE_KINDS for r in self.reports))

    @property
    def failing_step(self) -> GuestCommand | None:
        """The last command the test sent before it failed (not one only a replay needs)."""
        index = self.trace.failing_index() if self.trace is not None else None
        return self.trace.commands[index] if self.trace is not None and index is not None else None


@dataclass
class Bug:
    signature: tuple[str, ...]
    title: str
    tests: list[FailedTest]
    location: Location | None = None
    report: KernelReport | None = None  # the kernel report, for kernel bugs
    report_test: FailedTest | None = None

    @property
    def first(self) -> FailedTest:
        return self.tests[0]

    @property
    def kernels(self) -> list[str]:
        return list(dict.fromkeys(t.kernel for t in self.tests))


def failed_tests(records: list[TestRecord], traces: dict[tuple[str, str], TestTrace],
                 labels: dict[str, str]) -> list[FailedTest]:
    """The FAILed tests (strict xpasses included), with their traces and kernel reports."""
    out = []
    for r in records:
        label = labels.get(r.build_id, r.build_id)
        trace = traces.get((label, r.path))
        # a kernel report while the harness cleaned up after a test that passed is an ERROR of
        # that test in JUnit (its teardown failed), but the kernel's doing: a bug like any other
        kernel_in_teardown = (r.status == "ERROR" and trace is not None and trace.failed_phase == "teardown"
                              and trace.kernel_report)
        if r.status != "FAIL" and not kernel_in_teardown:
            continue
        text = "\n".join(x for x in (r.kernel_log_excerpt, r.message) if x)
        reports = parse_reports(r.kernel_log_excerpt or "") if r.kernel_log_excerpt else []
        if not reports and "kernel reported" in (r.message or ""):
            reports = parse_reports(text)
        out.append(FailedTest(r, label, trace, reports))
    return out


def _normal_target(op: str, path: str | None) -> str:
    if path is None:
        return "-"
    if op in ("mkdir", "rmdir", "mount", "umount"):
        return "<dir>"
    return re.sub(r"\d+", "N", path.rsplit("/", 1)[-1])


def signature(test: FailedTest, patch_functions: set[str], symbols: SymbolMap | None = None
              ) -> tuple[str, ...]:
    """The test's signature (see the module docstring)."""
    if test.kernel_decides:
        report = test.reports[0]
        frames = [symbols.symbolize(f) if symbols else f for f in report.frames]
        names = [f.function for f in frames if f.function and (f.offset or 0) < 0x100000]  # not garbage
        where = next((n for n in names if n in patch_functions), names[0] if names else "?")
        return ("kernel", report.kind, where)
    step = test.failing_step
    if step is not None:
        op, path, errno = operation(step)
        if errno is not None:
            return ("errno", op, _normal_target(op, path), errno)
    if test.behaviour:
        return ("behaviour", test.behaviour)
    message = next((ln.strip() for ln in (test.record.message or "").splitlines() if ln.strip()), "")
    return ("test", test.nodeid.split("::")[0], test.function, re.sub(r"\d+", "N", message))


def describe(sig: tuple[str, ...], test: FailedTest) -> str:
    """A one-line title for the bug of signature ``sig``."""
    if sig[0] == "kernel":
        report = test.reports[0]
        title = re.sub(r"/\S+/src/", "", report.title)
        return f"kernel {report.kind} in {sig[2]}(): {title}"
    if test.behaviour:
        return test.behaviour
    if sig[0] == "errno":
        return f"{sig[1]} of {sig[2]} fails with {sig[3]}"
    return f"{test.function} fails"


def group(tests: list[FailedTest], patch_functions: set[str],
          symbols: dict[str, SymbolMap | None] | None = None) -> list[Bug]:
    """The distinct bugs among ``tests``, in the order their first test failed."""
    sigs = [signature(t, patch_functions, (symbols or {}).get(t.kernel)) for t in tests]
    parent = list(range(len(tests)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple[str, ...], int] = {}
    for i, (test, sig) in enumerate(zip(tests, sigs, strict=True)):
        for key in (sig, ("behaviour", test.behaviour) if test.behaviour else None):
            if key is not None:
                mine, theirs = root(i), root(first_with.setdefault(key, i))
                if mine != theirs:
                    parent[mine] = theirs
    bugs: dict[int, Bug] = {}
    for i, (test, sig) in enumerate(zip(tests, sigs, strict=True)):
        bug = bugs.get(root(i))
        if bug is None:
            bug = bugs[root(i)] = Bug(sig, describe(sig, test), [])
        bug.tests.append(test)
        if test.kernel_decides and bug.report is None:
            bug.report, bug.report_test = test.reports[0], test
    return list(bugs.values())
