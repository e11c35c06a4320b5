"""``index.html`` of a results directory: one static page, everything escaped, no external resources."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from harness.errors import ExitCode
from harness.results.records import BootRecord, Status, Summary, TestRecord, exit_code, worst

SHOWN = {"MISS": "NOT RUN"}
"""Labels shown differently from their status name."""


@dataclass(frozen=True)
class BugRow:
    """One distinct bug at the top of the page (``harness review``): its tests (node id, kernel,
    link to the failure's details), kernel log excerpt, reproducers (relative paths) and the
    patch line concerned."""

    number: int
    title: str
    tests: list[tuple[str, str, str]]
    kernel_log: str | None = None
    repro: list[str] = field(default_factory=list)
    where: str = ""
    quote: str | None = None


@dataclass
class _Cell:
    label: str
    css: str
    href: str | None = None
    title: str = ""
    extra: str = ""
    log_href: str | None = None


@dataclass
class _Kernel:
    build_id: str
    label: str
    build: _Cell
    boot: _Cell


@dataclass
class _Row:
    path: str
    cells: list[_Cell | None]


@dataclass
class _Failure:
    anchor: str
    kind: str
    kernel: str
    what: str
    label: str
    css: str
    duration: str
    message: str | None
    details: str | None
    console: str | None
    kernel_log: str | None
    log_href: str | None = None


def _css(label: str) -> str:
    return "st-" + label.lower()


def _cell(label: str, **kw: Any) -> _Cell:
    return _Cell(SHOWN.get(label, label), _css(label), **kw)


def _href(path: str | None) -> str | None:
    """A link to a log: relative paths stay relative (URL-quoted), absolute ones become file: URLs."""
    if not path:
        return None
    p = Path(path)
    return p.as_uri() if p.is_absolute() else quote(p.as_posix(), safe="/")


def anchor(kind: str, ident: str) -> str:
    """The id of the details section of a failed record on the page."""
    return f"{kind}-" + hashlib.sha256(ident.encode()).hexdigest()[:12]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _failed(status: Status) -> bool:
    return status in ("FAIL", "ERROR")


class _View:
    """What the template shows, computed from a summary."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.failures: list[_Failure] = []
        self.build_ids = summary.kernel_ids()
        self.kernels = [self._kernel(b) for b in self.build_ids]
        stage_names = list(dict.fromkeys(s.stage for s in summary.stages))
        self.stages = [(name, [self._stage(name, b) for b in self.build_ids]) for name in stage_names]
        self.rows = self._rows()

    def _kernel(self, build_id: str) -> _Kernel:
        summary = self.summary
        label = summary.label_of(build_id)
        build = summary.build(build_id)
        if build is None:
            bcell = _Cell("—", "st-none", title="no build record")
        else:
            bcell = _cell(build.status, title=_first_line(build.message), extra=_dur(build.duration),
                          log_href=_href(build.log_path))
            if build.warnings:
                bcell.extra += f", {build.warnings} warning{'s' if build.warnings != 1 else ''}"
            if _failed(build.status):
                bcell.href = "#" + anchor("build", build.id)
                self.failures.append(_Failure(bcell.href[1:], "build", label, "build", build.status,
                                              _css(build.status), _dur(build.duration), build.message,
                                              None, None, None, bcell.log_href))
        return _Kernel(build_id, label, bcell, self._boot(label, [b for b in summary.boots
                                                                   if b.build_id == build_id]))

    def _boot(self, label: str, boots: list[BootRecord]) -> _Cell:
        if not boots:
            return _Cell("—", "st-none", title="not booted")
        status: Status = boots[0].status
        for b in boots[1:]:
            status = worst(status, b.status)
        shown = next(b for b in boots if b.status == status)
        cell = _cell(status, title=_first_line(shown.message), extra=_dur(shown.duration),
                     log_href=_href(shown.console_log_path))
        if len(boots) > 1:
            cell.extra += f" ({len(boots)} boots)"
        for b in boots:
            if b.status != "PASS":
                a = anchor("boot", b.id)
                cell.href = cell.href or "#" + a
                self.failures.append(_Failure(a, "boot", label, "boot", b.status, _css(b.status),
                                              _dur(b.duration), b.message, None, None, None,
                                              _href(b.console_log_path)))
        return cell

    def _stage(self, name: str, build_id: str) -> _Cell | None:
        found = [s for s in self.summary.stages if s.stage == name and s.build_id == build_id]
        if not found:
            return None
        s = found[-1]
        cell = _cell(s.status, title=_first_line(s.message), extra=_dur(s.duration),
                     log_href=_href(s.log_path))
        if s.status != "PASS":
            cell.href = "#" + anchor("stage", s.id)
            self.failures.append(_Failure(cell.href[1:], "stage", self.summary.label_of(build_id), name,
                                          s.status, _css(s.status), _dur(s.duration), s.message, None,
                                          None, None, cell.log_href))
        return cell

    def _rows(self) -> list[_Row]:
        paths: list[str] = []
        by_key: dict[tuple[str, str], TestRecord] = {}
        for t in self.summary.tests:
            if t.path not in paths:
                paths.append(t.path)
            by_key[(t.path, t.build_id)] = t
        rows: list[_Row] = []
        for path in paths:
            cells: list[_Cell | None] = []
            for build_id in self.build_ids:
                found = by_key.get((path, build_id))
                cells.append(None if found is None else self._test(found))
            rows.append(_Row(path, cells))
        return rows

    def _test(self, t: TestRecord) -> _Cell:
        why = f"not run: {t.not_run}" if t.status == "MISS" and t.not_run else _first_line(t.message)
        cell = _cell(t.label, title=" — ".join(x for x in (_dur(t.duration), why) if x))
        if _failed(t.status):
            cell.href = "#" + anchor("test", t.id)
            cell.css = _css(t.status)  # a strict XPASS is a failure: red
            self.failures.append(_Failure(cell.href[1:], "test", self.summary.label_of(t.build_id), t.path,
                                          t.label, cell.css, _dur(t.duration), t.message, t.details,
                                          t.console_excerpt, t.kernel_log_excerpt))
        return cell


_VERDICTS = {ExitCode.OK: ("all tests passed", "st-pass"),
             ExitCode.FAILED: ("tests failed", "st-fail"),
             ExitCode.ERROR: ("infrastructure errors (build, boot, stage or test ERROR, or tests not run)",
                              "st-error")}


def _context(summary: Summary, bugs: list[BugRow],
             links: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    view = _View(summary)
    code = exit_code(summary)
    if summary.interrupted:
        verdict, css = f"interrupted by {summary.interrupted}: the results are partial", "st-error"
    else:
        verdict, css = _VERDICTS[ExitCode(code)]
    return {
        "summary": summary,
        "counts": summary.counts(),
        "kernels": view.kernels,
        "stages": view.stages,
        "rows": view.rows,
        "failures": view.failures,
        "exit_code": code,
        "verdict": verdict,
        "verdict_css": css,
        "checkouts": summary.checkouts,
        "links": list(links),
        "bugs": [dataclasses.replace(b, repro=[_href(r) or r for r in b.repro]) for b in bugs],
        "not_started": [k.label for k in view.kernels
                        if (b := summary.build(k.build_id)) is not None and b.status == "MISS"],
    }


def _template() -> jinja2.Template:
    resource = importlib.resources.files("harness").joinpath("templates", "report.html.j2")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["lines"] = lambda text: len(str(text or "").splitlines())
    return env.from_string(resource.read_text(encoding="utf-8"))


def render_html(summary: Summary, bugs: list[BugRow] | None = None,
                links: Sequence[tuple[str, str]] = ()) -> str:
    """``index.html``: one static page, no external resources; everything escaped.  ``bugs``
    (a review's distinct bugs) come first, before the tests x kernels table; ``links`` are
    (href, text) pairs shown under the counts (``coverage.html``)."""
    return _template().render(**_context(summary, bugs or [], links))
