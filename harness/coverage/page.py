"""``coverage.html``: the patch's added lines, marked covered or not, one static page."""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from harness.coverage.report import FileCoverage, SeriesCoverage, percent


@dataclass(frozen=True)
class _Row:
    css: str  # cov, unc (executable, covered or not), add (no code), del, "" (context)
    number: int | str
    kind: str
    text: str
    anchor: str | None


def _anchor(series: str, path: str) -> str:
    return "f-" + hashlib.sha256(f"{series}:{path}".encode()).hexdigest()[:10]


def _rows(f: FileCoverage, anchor: str) -> list[list[_Row]]:
    result = []
    for hunk in f.hunks:
        rows = []
        for d in hunk:
            css = {"-": "del", " ": ""}.get(d.kind, "add")
            if d.kind == "+" and d.number in f.executable:
                css = "cov" if d.number in f.covered else "unc"
            rows.append(_Row(css, d.number if d.number is not None else "", d.kind, d.text,
                             f"{anchor}-{d.number}" if css in ("cov", "unc") else None))
        result.append(rows)
    return result


def _pct(covered: int, executable: int) -> str:
    value = percent(covered, executable)
    return "—" if value is None else f"{value}"


def _context(coverage: Sequence[SeriesCoverage]) -> dict[str, Any]:
    series = []
    for s in coverage:
        files = []
        for path, f in sorted(s.files.items()):
            anchor = _anchor(s.series, path)
            files.append({"path": path, "anchor": anchor, "added": len(f.added),
                          "executable": len(f.executable), "covered": len(f.covered),
                          "percent": _pct(len(f.covered), len(f.executable)),
                          "uncovered": f.uncovered, "hunks": _rows(f, anchor)})
        covered, executable = s.total()
        series.append({"name": s.series, "files": files, "covered": covered, "executable": executable,
                       "percent": _pct(covered, executable),
                       "kernels": [{"label": k.plan.label, "vms": len(k.logs), "boot_traced": k.boot_traced}
                                   for k in s.kernels]})
    return {"series": series}


def render(coverage: Sequence[SeriesCoverage]) -> str:
    resource = importlib.resources.files("harness").joinpath("templates", "coverage.html.j2")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(resource.read_text(encoding="utf-8")).render(**_context(coverage))
