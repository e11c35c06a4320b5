"""JUnit XML: test records from pytest's ``--junitxml``, and the merged ``junit.xml`` of a results directory.

Input (:func:`parse_junit`) is pytest's ``--junitxml``; with ``-o
junit_logging=all`` each testcase's ``<system-out>`` is kept as the guest
console excerpt and ``<system-err>`` as the kernel log excerpt.  The plugin
adds properties to every testcase, and they win over guessing:

* ``nodeid`` -- the exact node id (else it is rebuilt from the mangled names);
* ``console_log`` / ``kernel_log`` -- the excerpts of a failing test;
* ``error_kind`` -- the ``harness.errors`` kind of the error the test raised:
  one of :data:`~harness.results.records.ERROR_KINDS` makes it an ERROR, never
  a verdict (errors are told apart by class, never by their text);
* ``not_run`` -- the harness did not run the test, and why (a failed stage).

Excerpts are cut to :data:`~harness.results.text.MAX_EXCERPT` characters.  A
testcase without a name (pytest's trace of a test cut short by an
interrupt) is no result and is left out.
:func:`parse_junit` reports what pytest said (a test not run because a stage
failed stays the ERROR or SKIP pytest gave it, with ``not_run`` set); a
results directory counts such a test as MISS.

Output (:func:`render_junit`): one ``<testsuite>`` per kernel; its build,
boots and failed stages are testcases too (class ``harness``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError
from harness.results.records import ERROR_KINDS, Status, Summary, TestRecord, XFail, record_id, worst
from harness.results.text import MAX_EXCERPT, truncate

PROP_NODEID = "nodeid"
PROP_CONSOLE = "console_log"
PROP_KERNEL_LOG = "kernel_log"
PROP_ERROR_KIND = "error_kind"
PROP_NOT_RUN = "not_run"

NOT_RUN_TYPE = "harness.not_run"
"""``<skipped type=...>`` of a test the harness did not run (status MISS) in a rendered junit.xml."""

_SECTION = re.compile(r"^-{3,} (?P<title>[^\n]*?) -{3,}$", re.M)


def clean_captured(text: str) -> str:
    """Drop pytest's empty ``--- Captured X ---`` sections; keep headers only when several remain."""
    matches = list(_SECTION.finditer(text))
    if not matches:
        return text.strip("\n")
    sections: list[tuple[str, str]] = []
    prefix = text[: matches[0].start()].strip("\n")
    if prefix.strip():
        sections.append(("", prefix))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].strip("\n")
        if body.strip():
            sections.append((m.group("title"), body))
    if len(sections) == 1:
        return sections[0][1]
    return "\n".join(f"--- {title} ---\n{body}" if title else body for title, body in sections)


def nodeid_of(classname: str, name: str) -> str:
    """Best-effort inverse of pytest's JUnit name mangling.

    pytest writes ``dir/test_x.py::TestC::test_m`` as classname
    ``dir.test_x.TestC`` and name ``test_m``.  The module is taken to end at
    the last dotted part that looks like a test module (``test_*``/``*_test``).
    """
    if not classname:
        return name
    parts = classname.split(".")
    end = 0
    for i, part in enumerate(parts):
        if part.startswith("test_") or part.endswith("_test") or part == "test":
            end = i + 1
    if end == 0:
        end = len(parts)
    module = "/".join(parts[:end]) + ".py"
    return "::".join([module, *parts[end:], name])


def junit_name(path: str) -> tuple[str, str]:
    """pytest's JUnit (classname, name) for a node id."""
    parts = path.split("::")
    if len(parts) == 1:
        return "", path
    module = parts[0].removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[1:-1]]), parts[-1]


def _text_of(elements: Iterable[ET.Element]) -> str:
    return "\n".join(clean_captured(e.text or "") for e in elements if (e.text or "").strip()).strip("\n")


def _testcase_record(case: ET.Element, build_id: str, start_time: str | None, limit: int,
                     kernels: Mapping[str, str]) -> TestRecord:
    props = {p.get("name", ""): p.get("value", "") for p in case.iterfind("properties/property")}
    path = props.get(PROP_NODEID) or nodeid_of(case.get("classname", ""), case.get("name", ""))
    build_id = kernels.get(path, build_id)
    try:
        duration: float | None = float(case.get("time", ""))
    except ValueError:
        duration = None
    status: Status = "PASS"
    xfail: XFail | None = None
    messages: list[str] = []
    details: list[str] = []
    for child in case:
        if child.tag not in ("failure", "error", "skipped"):
            continue
        message = child.get("message", "")
        text = (child.text or "").strip("\n")
        if child.tag == "failure":
            this: Status = "ERROR" if props.get(PROP_ERROR_KIND) in ERROR_KINDS else "FAIL"
            if message.startswith("[XPASS(strict)]"):
                xfail = "xpass"
        elif child.tag == "error":
            this = "ERROR"
        else:
            this = "SKIP"
            if child.get("type") == "pytest.xfail":
                xfail = "xfail"
        status = worst(status, this)
        if message:
            messages.append(message)
        if text and text != message:
            details.append(text)
    if xfail == "xfail" and status != "SKIP":
        xfail = None  # an xfail whose teardown then failed: the failure is what counts
    console = props.get(PROP_CONSOLE) or _text_of(case.iterfind("system-out"))
    kernel_log = props.get(PROP_KERNEL_LOG) or _text_of(case.iterfind("system-err"))
    return TestRecord(
        id=record_id(build_id, path),
        build_id=build_id,
        path=path,
        status=status,
        duration=duration,
        message=truncate("\n".join(messages), limit) or None,
        details=truncate("\n\n".join(details), limit) or None,
        console_excerpt=truncate(console, limit) or None,
        kernel_log_excerpt=truncate(kernel_log, limit) or None,
        xfail=xfail,
        start_time=start_time,
        not_run=props.get(PROP_NOT_RUN) or None,
    )


def parse_junit(path: Path, build_id: str, *, limit: int = MAX_EXCERPT,
                kernels: Mapping[str, str] | None = None) -> list[TestRecord]:
    """The tests of one pytest ``--junitxml`` file, as records of build ``build_id``
    (or of ``kernels[node id]``, the build each test ran on, when given)."""
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise InputError(f"{path}: cannot read JUnit file ({exc.strerror})") from exc
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a JUnit XML file: {exc}") from exc
    if root.tag not in ("testsuite", "testsuites"):
        raise InputError(f"{path}: not a JUnit XML file (root element <{root.tag}>)")
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    records: list[TestRecord] = []
    for suite in suites:
        start = suite.get("timestamp")
        for case in suite.iterfind("testcase"):
            if not case.get("name") and case.find(f"properties/property[@name='{PROP_NODEID}']") is None:
                continue  # what pytest leaves of a test cut short by an interrupt: no name, no outcome
            records.append(_testcase_record(case, build_id, start, limit, kernels or {}))
    return records


# --------------------------------------------------------------------------- output


@dataclass
class _Case:
    classname: str
    name: str
    duration: float | None
    status: Status
    message: str | None = None
    details: str | None = None
    out: str | None = None
    err: str | None = None
    xfail: XFail | None = None
    properties: tuple[tuple[str, str], ...] = ()


def _fmt_time(seconds: float | None) -> str:
    return f"{seconds or 0.0:.3f}"


def _cases(summary: Summary, build_id: str) -> list[_Case]:
    cases: list[_Case] = []
    build = summary.build(build_id)
    if build is not None:
        cases.append(_Case("harness", "build", build.duration, build.status, build.message,
                           f"log: {build.log_path}" if build.log_path else None))
    for i, boot in enumerate(b for b in summary.boots if b.build_id == build_id):
        cases.append(_Case("harness", "boot" if i == 0 else f"boot[{i + 1}]", boot.duration, boot.status,
                           boot.message, f"console log: {boot.console_log_path}"
                           if boot.console_log_path else None))
    for stage in summary.stages:
        if stage.build_id == build_id:
            cases.append(_Case("harness", stage.stage, stage.duration, stage.status, stage.message,
                               f"log: {stage.log_path}" if stage.log_path else None))
    for t in summary.tests:
        if t.build_id == build_id:
            classname, name = junit_name(t.path)
            props = [(PROP_NODEID, t.path)]
            if t.not_run:
                props.append((PROP_NOT_RUN, t.not_run))
            message = t.message or (f"not run: {t.not_run}" if t.status == "MISS" and t.not_run else None)
            cases.append(_Case(classname, name, t.duration, t.status, message, t.details,
                               t.console_excerpt, t.kernel_log_excerpt, t.xfail, tuple(props)))
    return cases


def render_junit(summary: Summary) -> str:
    """One ``<testsuite>`` per kernel; its build, boots and failed stages are testcases too."""
    root = ET.Element("testsuites", name="harness")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for build_id in summary.kernel_ids():
        suite = ET.SubElement(root, "testsuite", name=summary.label_of(build_id))
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="build_id", value=build_id)
        if summary.interrupted:
            ET.SubElement(props, "property", name="interrupted", value=summary.interrupted)
        build = summary.build(build_id)
        if build is not None:
            for key in ("series", "config", "status", "log_path", "bzimage_path"):
                value = getattr(build, key)
                if value is not None:
                    ET.SubElement(props, "property", name=f"build.{key}", value=str(value))
            ET.SubElement(props, "property", name="build.warnings", value=str(build.warnings))
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite_time = 0.0
        for c in _cases(summary, build_id):
            case = ET.SubElement(suite, "testcase", classname=c.classname, name=c.name,
                                 time=_fmt_time(c.duration))
            if c.properties:
                case_props = ET.SubElement(case, "properties")
                for name, value in c.properties:
                    ET.SubElement(case_props, "property", name=name, value=value)
            counts["tests"] += 1
            suite_time += c.duration or 0.0
            if c.status in ("FAIL", "ERROR"):
                tag = "failure" if c.status == "FAIL" else "error"
                counts["failures" if c.status == "FAIL" else "errors"] += 1
                el = ET.SubElement(case, tag, message=c.message or c.status)
                el.text = c.details or c.message or ""
            elif c.status in ("SKIP", "MISS"):
                counts["skipped"] += 1
                kind = NOT_RUN_TYPE if c.status == "MISS" else (
                    "pytest.xfail" if c.xfail == "xfail" else "pytest.skip")
                el = ET.SubElement(case, "skipped", type=kind, message=c.message or "")
                if c.details:
                    el.text = c.details
            if c.out:
                ET.SubElement(case, "system-out").text = c.out
            if c.err:
                ET.SubElement(case, "system-err").text = c.err
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", _fmt_time(suite_time))
        total_time += suite_time
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", _fmt_time(total_time))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
