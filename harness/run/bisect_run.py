"""``harness bisect``: the real runner for the bisect engine, and its two modes.

:mod:`harness.run.bisect` is pure logic; this module supplies what it calls for
each candidate: build the kernel (cached, incremental) and run ONE pytest node
in the booted guest, then turn the JUnit result into a :class:`Verdict`.

* :func:`run_test` runs ``python -m pytest NODEID --kernel-bzimage BZ ...`` in a
  child process (the pytest plugin boots that bzImage instead of building) and
  maps its JUnit file:

  ========================================  =========
  PASS, or an expected failure (xfail)      ``GOOD``
  FAIL, including a strict xpass            ``BAD`` (detail: message, traceback, kernel log, console)
  ERROR (fixture/boot/SSH: infrastructure)  ``INFRA`` (the engine retries once, then skips)
  SKIP (the test skipped itself)            ``SKIP``
  ========================================  =========

  Several testcases (a parametrized node) combine: any FAIL is BAD, else any
  ERROR is INFRA, else all skipped is SKIP, else GOOD.  A node id that names
  no test is an :class:`InputError`; :func:`check_test` checks that once, up
  front, with ``pytest --collect-only`` (before anything is built).
* :func:`bisect_series`: which patch of a series broke the test.  Candidate
  ``i`` is the base chain plus the first ``i`` own patches; the config is
  rendered for the series chain that prefix really contains (candidate 0 of
  ``rcfs-testss`` is rendered without ``rcfs-testss``).  Every candidate
  builds in the same build entry, so steps after the first are incremental.
* :func:`bisect_git`: which commit of ``good..bad`` (first-parent) broke it.
  Each step exports the commit with :func:`harness.run.bisect_candidates.git_source` (the
  user's repository is only read) and applies an optional series on top
  (typically ``compat``, so an old tree builds with today's toolchain).

A build that fails (patch does not apply, compile error, config symbol
missing) makes the candidate a ``SKIP`` with the error as detail.  Every step
is logged as JSON lines (default ``$HARNESS_CACHE/bisect/<timestamp>.jsonl``);
``replay_from`` a log resumes an interrupted bisect.

The test node is run from ``cwd`` (default: the current directory), so a node
id is written as pytest would take it there.  A node under ``tests/`` of this
repository runs with its conftest (``tests/target/`` and ``tests/rcfs/``
use the real cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import cache, proc
from harness.errors import InputError, StageError
from harness.kernel import build, config, patches, source
from harness.kernel.config import ConfigRequest
from harness.kernel.patches import Series
from harness.results import TestRecord, parse_junit, truncate
from harness.run import pytest_cmd
from harness.run.bisect import BisectOutcome, Progress, bisect, estimate_steps
from harness.run.bisect_candidates import (
    git_candidates,
    git_source,
    series_candidates,
    series_prefix,
)
from harness.run.bisect_record import Candidate, StepResult, Verdict

DEFAULT_TIMEOUT = 900.0  # seconds for one pytest run (boot + test)
COLLECT_TIMEOUT = 120.0
GIT_SERIES_NAME = "bisect"  # build-entry name of a git bisect without a series on top
CONSOLE_TAIL = 3000
DETAIL_MAX = 12000


# --- one test run ----------------------------------------------------------------


def _pytest_argv(nodeid: str, series: str | None, config_name: str,
                 cwd: Path | None = None) -> list[str]:
    resolved, suite = pytest_cmd.resolve_nodeid(nodeid, cwd)
    return pytest_cmd.pytest_argv([resolved], config=config_name, series=series, suite=suite)


def _check_nodeid(nodeid: str) -> None:
    if not nodeid.strip() or nodeid.startswith("-"):
        raise InputError(f"--test {nodeid!r}: expected a pytest node id (path.py::test_name)")


def _tail_lines(text: str, count: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def check_test(nodeid: str, series: str | None = None, config_name: str = "default",
               *, cwd: Path | None = None) -> int:
    """Check that ``nodeid`` names at least one test; returns how many it collects.

    Raises :class:`InputError` ("--test NODEID: no such test") otherwise.
    """
    _check_nodeid(nodeid)
    argv = _pytest_argv(nodeid, series, config_name, cwd) + ["--collect-only", "-q"]
    # a timeout (HarnessTimeout) or a missing pytest (ToolMissing) is an InfraError as it is
    result = proc.run(argv, cwd=cwd, check=False, timeout=COLLECT_TIMEOUT,
                      what=f"pytest --collect-only {nodeid}")
    output = result.stdout + result.stderr
    if result.returncode in (4, 5):  # usage error (not found) / no tests collected
        reason = next((line.strip() for line in output.splitlines()
                       if "not found" in line or "no match" in line), "")
        raise InputError(f"--test {nodeid}: no such test" + (f" ({reason})" if reason else ""))
    if result.returncode != 0:
        raise InputError(f"--test {nodeid}: pytest cannot collect it (exit {result.returncode}):\n"
                         f"{_tail_lines(output, 12)}")
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    if not collected:
        raise InputError(f"--test {nodeid}: no such test")
    return len(collected)


def _record_detail(record: TestRecord) -> str:
    parts = [f"{record.path}: {record.label}"]
    if record.message:
        parts.append(record.message.strip())
    if record.details and record.details.strip() != (record.message or "").strip():
        parts.append(truncate(record.details.strip(), 6000))
    if record.kernel_log_excerpt:
        parts.append("--- kernel log ---\n" + truncate(record.kernel_log_excerpt.strip(), 3000))
    if record.console_excerpt:
        console = record.console_excerpt.strip()
        if len(console) > CONSOLE_TAIL:
            console = "[...]\n" + console[-CONSOLE_TAIL:]
        parts.append("--- guest console (end) ---\n" + console)
    return "\n".join(parts)


def verdict_of(records: Sequence[TestRecord]) -> tuple[Verdict, str]:
    """The bisect verdict of a test node's JUnit records (see the module docstring)."""
    if not records:
        raise ValueError("no test records")
    failed = [r for r in records if r.status == "FAIL"]
    errors = [r for r in records if r.status == "ERROR"]
    skipped = [r for r in records if r.status == "SKIP" and r.xfail != "xfail"]
    if failed:
        verdict, chosen = Verdict.BAD, failed
    elif errors:
        verdict, chosen = Verdict.INFRA, errors
    elif len(skipped) == len(records):
        verdict, chosen = Verdict.SKIP, skipped
    else:
        good = [f"{r.path}: {r.label}" for r in records]
        return Verdict.GOOD, "\n".join(good)
    detail = "\n\n".join(_record_detail(r) for r in chosen)
    return verdict, truncate(detail, DETAIL_MAX)


_SECTION_RE = re.compile(r"^-{3,} (guest console|kernel log) -{3,}$")
_HEADER_RE = re.compile(r"^(?:[-=_]{3,} .* [-=_]{3,}|={5,})$")


def terminal_sections(output: str) -> dict[str, str]:
    """The ``guest console`` / ``kernel log`` report sections of pytest's terminal output.

    The plugin attaches them to a failing test's report; JUnit does not always
    carry them, so a verdict's detail takes them from here.
    """
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        m = _SECTION_RE.match(line.strip())
        if m:
            current = found.setdefault(m.group(1), [])
            continue
        if _HEADER_RE.match(line.strip()):
            current = None
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def verdict_from_junit(junit: Path, nodeid: str, returncode: int, output: str = "") -> tuple[Verdict, str]:
    """Map one pytest run (its JUnit file, exit status and terminal output) to a verdict."""
    records = parse_junit(junit, "bisect") if junit.is_file() else []
    sections = terminal_sections(output)
    if len(records) == 1 and sections:
        record = records[0]
        records = [dataclasses.replace(
            record,
            console_excerpt=record.console_excerpt or sections.get("guest console") or None,
            kernel_log_excerpt=record.kernel_log_excerpt or sections.get("kernel log") or None)]
    if not records:
        if returncode in (4, 5):
            raise InputError(f"--test {nodeid}: no such test")
        return Verdict.INFRA, (f"pytest exited {returncode} without running {nodeid}:\n"
                               f"{_tail_lines(output, 12)}")
    return verdict_of(records)


def run_test(bzimage: Path, nodeid: str, series: str | None, config: str,
             timeout: float | None = DEFAULT_TIMEOUT, *, cwd: Path | None = None) -> tuple[Verdict, str]:
    """Boot ``bzimage`` and run the one pytest node ``nodeid`` in it: (verdict, detail)."""
    _check_nodeid(nodeid)
    with tempfile.TemporaryDirectory(prefix="harness-bisect-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = _pytest_argv(nodeid, series, config, cwd) + [
            "--kernel-bzimage", str(Path(bzimage).absolute()), f"--junitxml={junit}",
            "-o", "junit_logging=all", "-q"]
        # a timeout (the child is killed: HarnessTimeout) or a missing pytest (ToolMissing)
        # is an InfraError, which the engine retries once and then skips
        result = proc.run(argv, cwd=cwd, check=False, timeout=timeout, what=f"pytest {nodeid}")
        return verdict_from_junit(junit, nodeid, result.returncode, result.stdout + result.stderr)


# --- runners ---------------------------------------------------------------------


TestFn = Callable[[Path], tuple[Verdict, str]]


def _built_step(candidate: Candidate, started: float, make: Callable[[], build.BuildResult],
                test: TestFn) -> StepResult:
    try:
        result = make()
    except (InputError, StageError) as exc:
        return StepResult(candidate, Verdict.SKIP, f"build failed: {exc}",
                          duration=time.monotonic() - started)
    verdict, detail = test(result.bzimage)
    return StepResult(candidate, verdict, detail, duration=time.monotonic() - started,
                      built=not result.cached)


def prefix_chain(series: Series, candidate: Candidate) -> tuple[str, ...]:
    """The series chain a prefix really contains (candidate 0 lacks the series itself)."""
    base_count = len(series.patches) - len(series.own_patches())
    if candidate.prefix is not None and candidate.prefix <= base_count:
        return series.chain[:-1]
    return series.chain


def series_runner(series: Series, src: source.Source, config_name: str, overrides: Sequence[str],
                  test: TestFn, jobs: int | None = None) -> Callable[[Candidate], StepResult]:
    def run(candidate: Candidate) -> StepResult:
        started = time.monotonic()
        prefix = series_prefix(series, candidate)

        def make() -> build.BuildResult:
            request_config = config.render(config_name, series_chain=prefix_chain(series, candidate),
                                           overrides=list(overrides))
            kwargs = {"jobs": jobs} if jobs else {}
            return build.build(build.BuildRequest(source=src, series=prefix, config=request_config,
                                                  **kwargs))

        return _built_step(candidate, started, make, test)

    return run


def git_runner(repo: Path, on_top: Series, request_config: ConfigRequest, test: TestFn,
               jobs: int | None = None) -> Callable[[Candidate], StepResult]:
    def run(candidate: Candidate) -> StepResult:
        started = time.monotonic()

        def make() -> build.BuildResult:
            with git_source(repo, candidate.id) as src:
                kwargs = {"jobs": jobs} if jobs else {}
                return build.build(build.BuildRequest(source=src, series=on_top, config=request_config,
                                                      **kwargs))

        return _built_step(candidate, started, make, test)

    return run


# --- the two modes ---------------------------------------------------------------


def default_log_path() -> Path:
    """A free ``$HARNESS_CACHE/bisect/<timestamp>.jsonl`` (created by the first log record,
    so a bisect refused up front leaves nothing in the cache)."""
    directory = cache.root() / "bisect"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = directory / (f"{stamp}.jsonl" if n == 1 else f"{stamp}-{n}.jsonl")
        if not path.exists():
            return path
    raise InputError(f"{directory}: too many bisect logs named {stamp}")


def _progress_to_stderr(message: str) -> None:
    print(f"bisect: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    """What both modes share besides the test and the config."""

    log: Path | None = None
    replay_from: Path | None = None
    progress: Progress | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    cwd: Path | None = None
    jobs: int | None = None


def _tester(nodeid: str, series: str | None, config_name: str, opts: Options) -> TestFn:
    def test(bzimage: Path) -> tuple[Verdict, str]:
        return run_test(bzimage, nodeid, series, config_name, opts.timeout, cwd=opts.cwd)

    return test


def _announce(progress: Progress, what: str, candidates: Sequence[Candidate], log: Path | None) -> None:
    progress(f"{what}: {len(candidates)} candidates ({candidates[0].describe()} .. "
             f"{candidates[-1].describe()}), about {estimate_steps(len(candidates))} steps"
             + (f"; log {log}" if log else ""))


def bisect_series(series_name: str, nodeid: str, config_name: str = "default",
                  overrides: Sequence[str] = (), log: Path | None = None, *,
                  kernel_src: str | None = None, options: Options | None = None) -> BisectOutcome:
    """Which patch of ``series_name`` makes test ``nodeid`` fail?"""
    opts = options or Options()
    progress = opts.progress or _progress_to_stderr
    log = log or opts.log
    series = patches.load_series(series_name)
    candidates = series_candidates(series)
    config.render(config_name, series_chain=series.chain, overrides=list(overrides))  # bad input first
    check_test(nodeid, series.name, config_name, cwd=opts.cwd)
    src = source.resolve(kernel_src)
    _announce(progress, f"series {series.name} ({' -> '.join(series.chain)})", candidates, log)
    runner = series_runner(series, src, config_name, overrides,
                           _tester(nodeid, series.name, config_name, opts), opts.jobs)
    context = {"mode": "series", "series": series.name, "test": nodeid, "config": config_name,
               "set": " ".join(overrides), "source": src.id}
    return bisect(candidates, runner, log=log, progress=progress, replay_from=opts.replay_from,
                  context=context)


def bisect_git(repo: Path, good: str, bad: str, nodeid: str, config_name: str = "default",
               series_on_top: str | None = None, overrides: Sequence[str] = (),
               log: Path | None = None, *, options: Options | None = None) -> BisectOutcome:
    """Which commit of ``good..bad`` in ``repo`` makes test ``nodeid`` fail?"""
    opts = options or Options()
    progress = opts.progress or _progress_to_stderr
    log = log or opts.log
    repo = Path(repo).expanduser().absolute()
    candidates = git_candidates(repo, good, bad)
    on_top = (patches.load_series(series_on_top) if series_on_top
              else Series(GIT_SERIES_NAME, (), ()))
    request_config = config.render(config_name, series_chain=on_top.chain, overrides=list(overrides))
    check_test(nodeid, series_on_top, config_name, cwd=opts.cwd)
    _announce(progress, f"git {repo} {good}..{bad}"
              + (f" + series {series_on_top}" if series_on_top else ""), candidates, log)
    runner = git_runner(repo, on_top, request_config,
                        _tester(nodeid, series_on_top, config_name, opts), opts.jobs)
    context = {"mode": "git", "repo": str(repo.resolve()), "series": series_on_top or "",
               "test": nodeid, "config": config_name, "set": " ".join(overrides)}
    return bisect(candidates, runner, log=log, progress=progress, replay_from=opts.replay_from,
                  context=context)


def describe_outcome(outcome: BisectOutcome, candidates: int | None = None) -> str:
    """The text ``harness bisect`` ends with (summary, last good, figures)."""
    head, _, rest = outcome.summary().rstrip().partition("\n")
    lines = [head]
    if outcome.first_bad is not None and len(outcome.first_bad.id) == 40:
        lines.append(f"commit {outcome.first_bad.id}")
    lines.append(f"last good: {outcome.last_good.describe()}")
    if rest:
        lines.append(rest)
    if candidates is not None:
        lines.append(f"{candidates} candidates, {len(outcome.steps)} steps, "
                     f"{outcome.builds} builds, {outcome.duration:.0f}s")
    return "\n".join(lines)


def log_candidates(log: Path) -> int | None:
    """The candidate count of the last bisect recorded in ``log``."""
    count = None
    try:
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == "start":
                    count = int(record["candidates"])
    except OSError:
        return None
    return count
