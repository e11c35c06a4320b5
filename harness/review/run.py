"""``harness review FILE``: from a posted patch to a results directory with a reply a reviewer can post.

The steps: find the patch in FILE (against the base tree), write the
temporary series (base, posted patch, repairs, the series on top) into the
results directory, check that each patch applies, build every config (a
failed build's errors are traced back to the posted patch's hunks), run the
suite on what built (``--runxfail``: a test the suite expects to fail on the
posted patch is a failure here, like any other), group the failures into
bugs, and write ``review.txt``, ``repro/*.sh`` and ``index.html`` (bugs first).

Exit status (:attr:`Review.exit_code`): 0 no bug found, 1 bugs found (the
patch does not build, or tests failed), 2 could not test (FILE holds no
patch, a patch does not apply, a build failed for a reason the patch does
not explain, tests could not run); 128 + n when interrupted by signal n.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import cache
from harness import results as report
from harness.errors import ExitCode, InputError
from harness.kernel import build, config, patches, source
from harness.results import SessionRecords
from harness.results.guestlog import TestTrace
from harness.review import bugs, buildcheck, repro
from harness.review.buildcheck import BuildProblem, ConfigBuild
from harness.review.diff import PatchDiff
from harness.review.locate import Location, at_tree_line, for_operation, for_report
from harness.review.oops import SymbolMap
from harness.review.series import NotApplied, ReviewSeries, Submission
from harness.run import matrix

REVIEW_TXT = "review.txt"
REPRO_DIR = "repro"


@dataclass(frozen=True)
class Options:
    file: Path
    base: str = "compat"
    repair: str | None = None
    with_series: str | None = "rcfs-testss"
    configs: tuple[str, ...] = ("default", "debug")
    results_parent: Path = Path("results")
    kernel_src: str | None = None
    jobs: int | None = None
    pytest_args: tuple[str, ...] = ()


@dataclass
class Problem:
    """A build problem and the patch line it comes from (None: a line no patch of the series made)."""

    problem: BuildProblem
    location: Location | None
    retry: bool = False  # found building again without the lines the configuration stopped at


@dataclass
class Review:
    """Everything the review found; :mod:`harness.review.render` writes it out."""

    options: Options
    path: Path
    submission: Submission
    series: ReviewSeries
    source: str
    toolchain: build.Toolchain
    not_applied: NotApplied | None = None
    builds: list[ConfigBuild] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    dropped: list[tuple[str, int, str]] = field(default_factory=list)  # (path, line, text) built without
    summary: report.Summary | None = None
    bugs: list[bugs.Bug] = field(default_factory=list)
    repro: dict[str, str] = field(default_factory=dict)  # node id@kernel -> repro/<name>.sh
    suite_code: int | None = None
    cannot: list[str] = field(default_factory=list)  # why (part of) it could not be tested

    @property
    def diffs(self) -> list[PatchDiff]:
        return [layer.diff for layer in self.series.layers]

    @property
    def posted(self) -> list[int]:
        return [i for i, layer in enumerate(self.series.layers) if layer.origin == "posted"]

    @property
    def patch_problems(self) -> list[Problem]:
        """Build problems the posted patch explains: in its lines, or in lines no patch changed."""
        return [p for p in self.problems if p.location is None or p.location.layer in self.posted]

    @property
    def exit_code(self) -> int:
        if self.suite_code is not None and self.suite_code >= 128:
            return self.suite_code
        if self.bugs or self.patch_problems:
            return int(ExitCode.FAILED)
        if self.cannot or self.not_applied is not None or self.problems:
            return int(ExitCode.ERROR)
        return int(ExitCode.OK)


@contextmanager
def search_paths(patches_root: Path, configs_root: Path | None) -> Iterator[None]:
    """``$HARNESS_PATCHES`` (and ``$HARNESS_CONFIGS``) with the review's directories first, for
    this process and the suite's."""
    saved = {k: os.environ.get(k) for k in ("HARNESS_PATCHES", "HARNESS_CONFIGS")}
    for key, path in (("HARNESS_PATCHES", patches_root), ("HARNESS_CONFIGS", configs_root)):
        if path is not None:
            os.environ[key] = ":".join(x for x in (str(path), saved[key]) if x)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def write_config_overrides(directory: Path, names: tuple[str, ...], chain_extra: tuple[str, ...]) -> None:
    """Each config of ``names`` again, its template rendered as if the series chain held
    ``chain_extra`` too (a template turns on the test subsystems for a chain with rcfs-testss)."""
    directory.mkdir(parents=True, exist_ok=True)
    defs = config.load_defs()
    toml = ["# harness review: the configs, their templates seeing the series the review carries\n"]
    extra = ", ".join(f'"{n}"' for n in chain_extra)
    for name in names:
        d = defs[name]
        wrapper = f"review-{name}.config.j2"
        (directory / wrapper).write_text(
            "{#- harness review: " + name + " with series_chain + the series whose patches the review "
            "carries -#}\n{% set series_chain = series_chain + (" + extra + ",) %}\n"
            "{% include \"" + d.template + "\" %}\n")
        params = ", ".join(f"{k} = {_toml(v)}" for k, v in d.params.items())
        toml.append(f"\n[configs.{name}]\ntemplate = \"{wrapper}\"\ndescription = {_toml(d.description)}\n"
                    f"cpus = {d.cpus}\nparams = {{ {params} }}\n")
    (directory / "configs.toml").write_text("".join(toml))


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_options(options: Options) -> None:
    """Bad input is refused before anything is built or written."""
    if not options.file.is_file():
        raise InputError(f"{options.file}: no such file; expected a mail, mbox, web page or patch")
    for name in (options.base, options.repair, options.with_series):
        if name:
            patches.load_series(name)
    known = config.load_defs()
    for name in options.configs:
        if name not in known:
            raise InputError(f"--config {name!r}: unknown config; expected one of: "
                             f"{', '.join(sorted(known))}")


def review(options: Options) -> Review:
    from harness.review import series as rs

    check_options(options)
    src = source.resolve(options.kernel_src)
    with rs.scratch_tree(src.tree, options.base) as tree:
        submission = rs.read_submission(options.file, tree)
        layers = rs.layers_for(submission, options.repair, options.with_series)
        results = report.ResultsDir.create(options.results_parent)
        chain_extra = tuple(n for n in (options.repair, options.with_series) if n)
        series = rs.make_series(results.path / "patches", options.base, layers, chain_extra)
        rv = Review(options, results.path, submission, series, f"{src.origin} (id {src.id})",
                    build.detect_toolchain())
        configs_root = results.path / "configs" if chain_extra else None
        if configs_root is not None:
            write_config_overrides(configs_root, options.configs, chain_extra)
        with search_paths(series.root, configs_root):
            rv.not_applied = rs.apply_layers(series, tree)
            if rv.not_applied is not None:
                rv.cannot.append(f"{rv.not_applied.layer.label} does not apply: {rv.not_applied.why}")
                return finish(rv, results)
            build_all(rv, results, src)
            built = [b.config for b in rv.builds if b.ok]
            if built:
                cells = [matrix.Cell(c, series.name) for c in built]
                _, rv.suite_code = matrix.run(cells, into=results, jobs=options.jobs,
                                              extra=("--runxfail", *options.pytest_args))
                analyse(rv, results)
    return finish(rv, results)


def build_all(rv: Review, results: report.ResultsDir, src: source.Source) -> None:
    for name in rv.options.configs:
        print(f"==> review: building {rv.series.name}/{name}", file=sys.stderr, flush=True)
        outcome = buildcheck.build_config(rv.series.name, name, src, rv.series.chain_extra)
        rv.builds.append(outcome)
        if not outcome.ok:
            message = "; ".join(p.message for p in outcome.problems[:3]) or outcome.error or "failed"
            results.add_build(report.BuildRecord.new(
                rv.series.name, name, "FAIL", log_path=str(outcome.log) if outcome.log else None,
                message=f"build failed: {message}"))
            if outcome.error and not outcome.problems:
                rv.cannot.append(f"{name}: the build failed: {outcome.error}")
        for problem in outcome.problems:
            _add_problem(rv, problem)
    failed = next((b for b in rv.builds if not b.ok and b.problems), None)
    if failed is not None and all(p.kind == "kconfig" for p in failed.problems):
        keep_going(rv, src, failed)


def _add_problem(rv: Review, problem: BuildProblem, diffs: list[PatchDiff] | None = None,
                 retry: bool = False) -> None:
    for known in rv.problems:
        if known.problem.key == problem.key:
            merged = tuple(dict.fromkeys(known.problem.configs + problem.configs))
            known.problem = replace(known.problem, configs=merged)
            return
    location = None
    if problem.path and problem.line:
        location = at_tree_line(diffs or rv.diffs, problem.path, problem.line, "build")
    rv.problems.append(Problem(problem, location, retry))


def keep_going(rv: Review, src: source.Source, failed: ConfigBuild) -> None:
    """The configuration failed on lines the posted patch adds: build again without them, once,
    to find what else is wrong (the review says so)."""
    from harness.review import series as rs

    diffs = rv.diffs
    drop: dict[int, set[tuple[str, int]]] = {}
    for p in failed.problems:
        loc = at_tree_line(diffs, p.path or "", p.line or 0, "kconfig") if p.path and p.line else None
        if loc is not None and loc.layer in rv.posted and (line := loc.hunk.at_new(loc.line)) is not None \
                and line.kind == "+":
            drop.setdefault(loc.layer, set()).add((loc.path, loc.line))
            rv.dropped.append((loc.path, loc.line, line.text))
    if not drop:
        return
    layers = [replace(layer, text=buildcheck.without_lines(layer.text, drop[i])) if i in drop else layer
              for i, layer in enumerate(rv.series.layers)]
    variant = rs.make_series(rv.series.root, rv.series.base, layers, rv.series.chain_extra)
    print(f"==> review: building again without {len(rv.dropped)} line(s) to find further problems",
          file=sys.stderr, flush=True)
    outcome = buildcheck.build_config(variant.name, failed.config, src, rv.series.chain_extra)
    if outcome.log is not None and outcome.log.is_file():
        cache.copy_atomic(outcome.log, rv.path / "logs" / "build-without-dropped-lines.log")
    for problem in outcome.problems:
        _add_problem(rv, problem, [layer.diff for layer in variant.layers], retry=True)


def _traces(results: report.ResultsDir) -> dict[tuple[str, str], TestTrace]:
    traces: dict[tuple[str, str], TestTrace] = {}
    for records in sorted((results.path / "cells").glob(f"*/{report.RECORDS_JSON}")):
        try:
            session = SessionRecords.load(records)
        except InputError:
            continue
        for nodeid, trace in session.traces.items():
            traces[(trace.kernel, nodeid)] = trace
    return traces


def analyse(rv: Review, results: report.ResultsDir) -> None:
    """Failures into bugs, each located in the patch, with reproducers."""
    summary = rv.summary = results.summary
    labels = {b.id: b.kernel for b in summary.builds}
    failed = bugs.failed_tests(summary.tests, _traces(results), labels)
    functions = {fn for i in rv.posted for fd in rv.diffs[i].files for h in fd.hunks
                 for ln in h.lines if ln.kind == "+" for fn in [_defined(ln.text)] if fn}
    built = {f"{rv.series.name}/{b.config}": b for b in rv.builds if b.result is not None}
    maps = {label: SymbolMap.load(b.result.system_map) for label, b in built.items() if b.result}
    rv.bugs = bugs.group(failed, functions, maps)
    for bug in rv.bugs:
        if bug.report is not None and bug.report_test is not None:
            b = built.get(bug.report_test.kernel)
            found = for_report(bug.report, rv.diffs, rv.posted, maps.get(bug.report_test.kernel),
                               b.result.directory if b and b.result else None)
            bug.location = found[0] if found else None
        step = bug.first.failing_step
        if bug.location is None and step is not None:
            bug.location = for_operation(step, rv.diffs, rv.posted)
    for test in failed:
        if test.trace is None:
            continue
        name = repro_name(test, rv.repro.values())
        hint = run_hint(rv, test.kernel, name)
        cache.write_atomic(rv.path / REPRO_DIR / name, repro.script(
            test.trace, kernel=test.kernel, run_hint=hint, assertion=test.assertion))
        rv.repro[f"{test.nodeid}@{test.kernel}"] = f"{REPRO_DIR}/{name}"
    bugged = {(t.record.build_id, t.nodeid) for t in failed}
    rv.cannot += [f"{t.path}: {t.status}" + (f" ({t.not_run})" if t.not_run else "") for t in summary.tests
                  if t.status in ("ERROR", "MISS") and (t.build_id, t.path) not in bugged]


def _defined(text: str) -> str | None:
    import re

    m = re.match(r"^(?:static\s+)?(?:inline\s+)?[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\([^;]*$", text)
    return m.group(1) if m and not text.startswith((" ", "\t")) else None


def repro_name(test: bugs.FailedTest, taken: object) -> str:
    import re

    base = re.sub(r"[^A-Za-z0-9_.,=-]+", "-", test.nodeid.replace(".py::", "-")).strip("-")
    name = f"{base}.sh"
    if name in taken:  # type: ignore[operator]
        name = f"{base}-{test.kernel.rsplit('/', 1)[-1]}.sh"
    return name


def run_hint(rv: Review, kernel: str, name: str) -> str:
    config_name = kernel.rsplit("/", 1)[-1]
    env = f"HARNESS_PATCHES={rv.path / 'patches'}"
    if rv.series.chain_extra:
        env += f" HARNESS_CONFIGS={rv.path / 'configs'}"
    return (f"{env} harness run --config {config_name} --series {rv.series.name} "
            f"-- sh -s < {rv.path / REPRO_DIR / name}")


def finish(rv: Review, results: report.ResultsDir) -> Review:
    """Write review.txt and the report (bugs first)."""
    from harness.review import render

    rv.summary = results.summary
    results.write()
    cache.write_atomic(rv.path / report.INDEX_HTML,
                       report.render_html(results.summary, bugs=render.bug_rows(rv)))
    cache.write_atomic(rv.path / REVIEW_TXT, render.review_text(rv))
    return rv
