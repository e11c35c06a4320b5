"""``review.txt``, the reply a reviewer posts, and the bug rows of ``index.html``, from a :class:`Review`.

The reply says what was tested (kernel source, series, configs, toolchain,
counts), quotes each build problem against the hunk it comes from, then has
one section per distinct bug: the hunk concerned (quoted with ``> ``), what
the test did in the guest, what happened (errno or output, the kernel report
with its EIP mapped to the patch) and what was expected.
"""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.kernel import patches
from harness.kernel.patches import Patch
from harness.results.html import BugRow, anchor
from harness.results.records import Summary
from harness.review import repro
from harness.review.bugs import Bug, FailedTest

if TYPE_CHECKING:
    from harness.review.run import Problem, Review

WIDTH = 78
MAX_STEPS = 25
MAX_TESTS = 12
MAX_REPORT_LINES = 30


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(f"{prefix}{line}".rstrip() for line in text.splitlines())


def _wrap(text: str, prefix: str = "") -> str:
    return textwrap.fill(text, WIDTH, initial_indent=prefix, subsequent_indent=prefix,
                         break_long_words=False, break_on_hyphens=False)


def _heading(text: str, char: str = "-") -> str:
    return f"{text}\n{char * min(WIDTH, len(text))}"


def counts_line(summary: Summary, build_id: str | None = None) -> str:
    tests = [t for t in summary.tests if build_id is None or t.build_id == build_id]
    by: dict[str, int] = {}
    for t in tests:
        by[t.label] = by.get(t.label, 0) + 1
    parts = ", ".join(f"{n} {label.lower()}" for label, n in sorted(by.items(), key=lambda kv: -kv[1]))
    return f"{len(tests)} tests" + (f": {parts}" if parts else "")


def tested(rv: Review) -> list[str]:
    s = rv.series
    count = len(_series_patches(s.base))
    lines = [_heading("What was tested"),
             f"  patch:      {rv.submission.subject} ({rv.options.file})",
             f"  kernel:     Linux 2.6.20, {rv.source}",
             f"  series:     {s.name}: {s.base} ({count} patches), then"]
    what = {"posted": "", "repair": " (repair)", "with": " (on top)"}
    lines += [f"              {layer.filename[:4]} {layer.label}{what[layer.origin]}" for layer in s.layers]
    lines += [f"  configs:    {', '.join(rv.options.configs)} (i386, QEMU TCG)",
              f"  toolchain:  {rv.toolchain.gcc}; {rv.toolchain.binutils}; {rv.toolchain.make}"]
    for b in rv.builds:
        state = "built" if b.ok else f"FAILED ({len(b.problems)} problem(s))" if b.problems else "FAILED"
        lines.append(f"  build:      {s.name}/{b.config}: {state}")
    if rv.summary is not None and rv.summary.tests:
        for kernel in rv.summary.kernel_ids():
            lines.append(f"  tests:      {rv.summary.label_of(kernel)}: {counts_line(rv.summary, kernel)}")
    lines.append("  suite:      the rcfs suite, run with --runxfail (a test the suite expects to fail on the")
    lines.append("              posted rcfs patch counts as a failure like any other)")
    return lines


def _series_patches(name: str) -> list[Patch]:
    try:
        return list(patches.load_series(name).patches)
    except HarnessError:  # only a description
        return []


def verdict(rv: Review) -> str:
    if rv.not_applied is not None:
        return f"Could not test: {rv.not_applied.layer.label} does not apply ({rv.not_applied.why})."
    if rv.patch_problems and not any(b.ok for b in rv.builds):
        return (f"The patch does not build: {len(rv.patch_problems)} build problem(s), quoted below; "
                "the suite could not run.")
    parts = []
    if rv.patch_problems:
        parts.append(f"{len(rv.patch_problems)} build problem(s)")
    if rv.bugs:
        failing = sum(len(b.tests) for b in rv.bugs)
        parts.append(f"{len(rv.bugs)} distinct bug(s), from {failing} failing test(s)")
    if parts:
        return "Found " + " and ".join(parts) + "."
    if rv.cannot:
        return "Could not test everything: " + "; ".join(rv.cannot[:3])
    return "No bug found: every build passed and every test passed."


def problem_section(n: int, p: Problem, rv: Review) -> list[str]:
    prob = p.problem
    out = [_heading(f"Build problem {n}: {prob.where}: {prob.message}")]
    plural = "s" if len(prob.configs) > 1 else ""
    configs = f" (config{plural} {', '.join(prob.configs)})" if prob.configs else ""
    if p.location is not None:
        layer = rv.series.layers[p.location.layer]
        where = "the posted patch" if layer.origin == "posted" else layer.label
        out += [f"In {where}, {p.location.path}:{p.location.line}{configs}:", "", p.location.quote(), ""]
    else:
        out += [f"In a line no patch of the series changes{configs}.", ""]
    kind = {"kconfig": "kconfig", "compile": "gcc", "link": "ld"}.get(prob.kind, prob.kind)
    out.append(f"{kind} says:")
    if prob.function:
        out.append(f"  {prob.path}: In function '{prob.function}':")
    out.append(f"  {prob.where}: {prob.message}")
    out += [f"  {line}" for line in prob.context]
    if p.retry:
        out.append("  (found building again without the line(s) the configuration stopped at)")
    return out


def _step_lines(test: FailedTest) -> list[str]:
    assert test.trace is not None
    steps = repro.steps_of(test.trace)
    shown = steps[-MAX_STEPS:]
    out = [f"  [... {len(steps) - len(shown)} earlier steps]"] if len(shown) < len(steps) else []
    for step in shown:
        cmd = step.command
        who = "" if cmd.user == "root" else f"  (as {cmd.user})"
        first, *rest = cmd.command.strip("\n").splitlines() or [""]
        times = f"  (polled {step.repeat} times)" if step.repeat > 1 else ""
        out.append(f"  $ {first}{who}{times}")
        out += [f"  > {line}" for line in rest[:8]] + (["  > [...]"] if len(rest) > 8 else [])
        if cmd.input is not None:
            out.append(f"    (stdin: {len(cmd.input)} bytes)")
    return out


def _happened(bug: Bug, test: FailedTest) -> list[str]:
    out: list[str] = []
    step = test.failing_step
    if step is not None:
        if step.exit_status is None:
            out.append(f"  the last command never returned ({step.error or 'no status'})")
        else:
            output = step.stdout.rstrip("\n")
            out.append(f"  the last command exited {step.exit_status}" + (", printing:" if output else ""))
            shown = output.splitlines()
            out += [f"    {line[:100]}" + (" [...]" if len(line) > 100 else "") for line in shown[:12]]
            if len(shown) > 12:
                out.append(f"    [... {len(shown) - 12} more lines]")
    message = (test.record.message or "").strip()
    if message and not message.startswith("kernel reported"):
        out.append("  the test failed with:")
        out += [f"    {line}".rstrip() for line in message.splitlines()[:4] if line.strip()]
    report = bug.report if bug.report_test is test else (test.reports[0] if test.reports else None)
    if report is not None:
        out.append("  the kernel reported:" if test.kernel_decides else
                   f"  the kernel also reported ({report.kind}, not what this test states):")
        lines = [re.sub(r"/\S+?/src/", "", line) for line in report.text.splitlines()]
        out += [f"    {line}".rstrip() for line in lines[:MAX_REPORT_LINES]]
        if len(lines) > MAX_REPORT_LINES:
            out.append(f"    [... {len(lines) - MAX_REPORT_LINES} more lines in index.html]")
    return out


def _expected(test: FailedTest) -> list[str]:
    out = []
    doc = test.trace.doc if test.trace is not None else ""
    if doc:
        out.append(_wrap(doc, "  "))
    source = test.assertion
    values = next((ln.strip() for ln in (test.record.message or "").splitlines()
                   if ln.strip().startswith("assert ")), None)
    if source:
        out.append(f"  the test asserts: {source}")
    if values and values != source:
        out.append(f"  (with the values seen: {values})")
    if test.kernel_decides:
        out.append(_wrap("the kernel must report no problem (the harness fails a test during which it "
                         "reports an oops, BUG, warning or lockdep report)", "  "))
    return out or ["  (the test states no more than its name)"]


def bug_section(n: int, bug: Bug, rv: Review) -> list[str]:
    test = bug.first
    out = [_heading(f"Bug {n}: {bug.title}")]
    names = [f"{t.nodeid} ({t.kernel})" for t in bug.tests]
    out.append(f"{len(bug.tests)} failing test(s):")
    out += [f"  {name}" for name in names[:MAX_TESTS]]
    if len(names) > MAX_TESTS:
        out.append(f"  [... and {len(names) - MAX_TESTS} more]")
    out.append("")
    if bug.location is not None:
        layer = rv.series.layers[bug.location.layer]
        where = "the posted patch" if layer.origin == "posted" else layer.label
        out += [_wrap(f"In {where}, {bug.location.path}:{bug.location.line}, found from "
                      f"{bug.location.how}:"), "", bug.location.quote(), ""]
    else:
        out += ["(no line of the patch could be tied to it)", ""]
    if test.trace is not None:
        out.append(_wrap(f"What the test did ({test.nodeid}, in the guest, as root unless said):"))
        out += _step_lines(test)
        out.append("")
    out.append("What happened:")
    out += _happened(bug, test)
    out += ["", "What was expected:"]
    out += _expected(test)
    script = rv.repro.get(f"{test.nodeid}@{test.kernel}")
    if script:
        out += ["", f"Reproducer: {script} (exits 1 when the bug shows), on a fresh guest:",
                _indent(_wrap(repro_hint(rv, test, script), ""), "  ")]
    return out


def repro_hint(rv: Review, test: FailedTest, script: str) -> str:
    from harness.review.run import run_hint

    return run_hint(rv, test.kernel, script.split("/", 1)[1])


def review_text(rv: Review) -> str:
    head = [f"Subject: Re: {rv.submission.subject}", "",
            "Tested with the rcfs kernel-patch harness (harness review).", "",
            _wrap(verdict(rv)), ""]
    out = head + tested(rv) + [""]
    for n, p in enumerate(rv.problems, 1):
        out += problem_section(n, p, rv) + [""]
    if rv.dropped:
        out.append(_wrap("The configuration stopped at the line(s) below, so the kernel was built again "
                         "without them to find the problems behind:"))
        out += [f"  {path}:{line}: {text.strip()}" for path, line, text in rv.dropped] + [""]
    for n, bug in enumerate(rv.bugs, 1):
        out += bug_section(n, bug, rv) + [""]
    if rv.cannot:
        out.append(_heading("Not tested"))
        out += [f"  {why}" for why in rv.cannot[:40]] + [""]
    out.append(f"Results: {rv.path} (index.html: bugs first, then every test on every kernel)")
    return "\n".join(out).rstrip() + "\n"


def bug_rows(rv: Review) -> list[BugRow]:
    rows = []
    for n, bug in enumerate(rv.bugs, 1):
        tests = []
        for t in bug.tests:
            record_id = t.record.id
            tests.append((t.nodeid, t.kernel, "#" + anchor("test", record_id)))
        repros = [s for t in bug.tests if (s := rv.repro.get(f"{t.nodeid}@{t.kernel}"))]
        where = (f"{bug.location.path}:{bug.location.line}" + (f" {bug.location.function}()"
                                                                 if bug.location.function else "")
                 if bug.location else "")
        rows.append(BugRow(number=n, title=bug.title, tests=tests,
                           kernel_log=bug.report.text if bug.report else None,
                           repro=repros, where=where,
                           quote=bug.location.quote() if bug.location else None))
    return rows
