"""The union over every VM of a run: covered and uncovered added lines, ``coverage.json``.

An added line is executable when the debug info of at least one kernel of
the run maps an instruction to it, and covered when any VM of any kernel
executed one of its instructions (TCG logs an instruction when it first
translates it: once translated it has been reached).  Kernels whose patched
files are the same (one series, any config) add up; a run with two series
(the posted patch and the fixes), or a series that changed while the run
went on, has two versions of a file, whose keys in ``coverage.json`` are then
``<series>:<path>`` (``<series>@<digest>:<path>`` for two versions of one series).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cache
from harness.coverage import plan as kplan
from harness.coverage.added import DiffLine
from harness.coverage.plan import BOOT_LOG, KernelPlan

COVERAGE_JSON = "coverage.json"
COVERAGE_HTML = "coverage.html"
_LOGGED = re.compile(rb"^0x([0-9a-f]+):")


def executed(log: Path) -> set[int]:
    """Addresses of the instructions an ``-d in_asm`` log shows (``0xADDR:  bytes  insn`` lines)."""
    found: set[int] = set()
    with log.open("rb") as f:
        for line in f:
            m = _LOGGED.match(line)
            if m is not None:
                found.add(int(m.group(1), 16))
    return found


@dataclass
class KernelRun:
    """One kernel of the run: its plan and what its VMs executed."""

    plan: KernelPlan
    logs: list[Path]
    executed: set[int]

    @property
    def boot_traced(self) -> bool:
        return any(log.name.endswith(BOOT_LOG) for log in self.logs)

    def covered(self, path: str) -> set[int]:
        f = self.plan.files.get(path)
        if f is None:
            return set()
        return {line for line, addresses in f.executable.items() if self.executed.intersection(addresses)}


@dataclass
class FileCoverage:
    path: str
    added: list[int]
    executable: set[int] = field(default_factory=set)
    covered: set[int] = field(default_factory=set)
    hunks: tuple[tuple[DiffLine, ...], ...] = ()

    @property
    def uncovered(self) -> list[int]:
        return sorted(self.executable - self.covered)

    def to_json(self) -> dict[str, Any]:
        return {"added_lines": len(self.added), "added_executable": len(self.executable),
                "covered": len(self.covered), "percent": percent(len(self.covered), len(self.executable)),
                "uncovered": self.uncovered}


@dataclass
class SeriesCoverage:
    series: str  # the series' name, with the digest of its files when a run has two versions of it
    kernels: list[KernelRun]
    files: dict[str, FileCoverage]

    def total(self) -> tuple[int, int]:
        return (sum(len(f.covered) for f in self.files.values()),
                sum(len(f.executable) for f in self.files.values()))


def percent(covered: int, executable: int) -> float | None:
    return round(100.0 * covered / executable, 1) if executable else None


def load_runs(directories: Iterable[Path]) -> list[KernelRun]:
    """Every kernel traced in ``directories`` (coverage directories of a run, one per cell)."""
    runs: list[KernelRun] = []
    for directory in directories:
        for plan_path in sorted(directory.glob("*/" + kplan.PLAN)):
            logs = sorted(plan_path.parent.glob("*.log"))
            seen: set[int] = set()
            for log in logs:
                seen |= executed(log)
            runs.append(KernelRun(kplan.load(plan_path), logs, seen))
    return runs


def by_series(runs: Sequence[KernelRun]) -> list[SeriesCoverage]:
    """The union per series (per version of its files): executable lines of any of its kernels,
    covered by any VM."""
    versions: dict[str, set[str]] = {}
    for run in runs:
        versions.setdefault(run.plan.series, set()).add(run.plan.source)
    result: dict[str, SeriesCoverage] = {}
    for run in runs:
        name = run.plan.series
        if len(versions[name]) > 1:
            name += "@" + run.plan.source[:8]
        series = result.setdefault(name, SeriesCoverage(name, [], {}))
        series.kernels.append(run)
        for path, f in run.plan.files.items():
            cov = series.files.setdefault(path, FileCoverage(path, list(f.added), hunks=f.hunks))
            cov.executable |= set(f.executable)
            cov.covered |= run.covered(path)
    return [result[name] for name in sorted(result)]


def to_json(coverage: Sequence[SeriesCoverage]) -> dict[str, Any]:
    """``coverage.json``: ``{"files": {path: {...}}, "total": {...}, "kernels": [...]}``."""
    prefix = len(coverage) > 1
    files: dict[str, Any] = {}
    kernels: list[dict[str, Any]] = []
    covered = executable = 0
    for series in coverage:
        for path, f in sorted(series.files.items()):
            files[f"{series.series}:{path}" if prefix else path] = f.to_json()
        c, e = series.total()
        covered, executable = covered + c, executable + e
        kernels += [{"label": k.plan.label, "series": series.series, "build_key": k.plan.key,
                     "vms": len(k.logs), "boot_traced": k.boot_traced, "functions": len(k.plan.functions),
                     "executed_instructions": len(k.executed),
                     "files": {path: {"added_executable": len(f.executable), "covered": len(k.covered(path))}
                               for path, f in sorted(k.plan.files.items()) if f.executable}}
                    for k in series.kernels]
    return {"series": [s.series for s in coverage], "files": files,
            "total": {"added_executable": executable, "covered": covered,
                      "percent": percent(covered, executable)},
            "kernels": kernels}


def headline(coverage: Sequence[SeriesCoverage]) -> str:
    """One line per series: each file's figure and the total."""
    lines = []
    for series in coverage:
        parts = [f"{path} {len(f.covered)}/{len(f.executable)}"
                 + (f" ({percent(len(f.covered), len(f.executable))}%)" if f.executable else "")
                 for path, f in sorted(series.files.items()) if f.executable]
        c, e = series.total()
        lines.append(f"{series.series}: " + (", ".join(parts) or "no executable added lines")
                     + (f"; total {c}/{e} ({percent(c, e)}%)" if e else ""))
    return "\n".join(lines)


def write(dest: Path, directories: Iterable[Path]) -> list[SeriesCoverage]:
    """Write ``coverage.json`` and ``coverage.html`` into ``dest`` from the coverage directories."""
    from harness.coverage import page

    coverage = by_series(load_runs(directories))
    dest.mkdir(parents=True, exist_ok=True)
    cache.write_json_atomic(dest / COVERAGE_JSON, to_json(coverage))
    cache.write_atomic(dest / COVERAGE_HTML, page.render(coverage))
    return coverage
