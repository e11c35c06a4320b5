"""Commands that run the suite: test, report merge, bisect, review, repro."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.errors import InputError


def cmd_test(args: argparse.Namespace) -> int:
    from harness.run import matrix as testrun

    cells = testrun.load_matrix()
    if not args.matrix:
        configs = [args.config] if args.config else sorted({c.config for c in cells})
        series = [args.series] if args.series else sorted({c.series for c in cells})
        cells = [testrun.Cell(c, s) for c in configs for s in series]
    if args.shard:
        cells = testrun.shard(cells, args.shard)
        if not cells:
            print(f"harness: shard {args.shard} has no cells", file=sys.stderr)
            return 0
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    if args.coverage and "," in str(Path(args.results).absolute()):
        raise InputError(f"--results {args.results}: no commas allowed with --coverage (QEMU option syntax)")
    path, code = testrun.run(cells, results_parent=Path(args.results), extra=extra, jobs=args.jobs,
                             coverage=args.coverage)
    testrun.print_summary(path)
    return code


def cmd_report_merge(args: argparse.Namespace) -> int:
    from harness import results as report
    from harness.run import matrix as testrun

    summary = report.merge([Path(d) for d in args.dirs], Path(args.output))
    testrun.print_summary(Path(args.output))
    return report.exit_code(summary)


def cmd_bisect(args: argparse.Namespace) -> int:
    """``harness bisect``: 0 first bad found, 1 ambiguous (skips), 2 bad input/infrastructure."""
    from harness.run import bisect_run

    if args.git is None:
        if args.series is None:
            raise InputError("harness bisect: give --series NAME (which patch of a series) or "
                             "--git PATH --good REF --bad REF (which commit)")
        given = [opt for opt, value in (("--good", args.good), ("--bad", args.bad)) if value is not None]
        if given:
            raise InputError(f"harness bisect: {' and '.join(given)} need --git PATH; --series NAME "
                             "alone bisects the patches of that series")
    else:
        missing = [opt for opt, value in (("--good", args.good), ("--bad", args.bad)) if not value]
        if missing:
            raise InputError(f"harness bisect --git: {' and '.join(missing)} REF missing; expected "
                             "--good REF (the test passes) and --bad REF (it fails)")
    if args.timeout is not None and args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout}: expected a positive number of seconds")
    replay = Path(args.replay) if args.replay else None
    if replay is not None and not replay.is_file():
        raise InputError(f"--replay {replay}: no such file; expected a bisect log (.jsonl)")
    log = Path(args.log) if args.log else (replay or bisect_run.default_log_path())
    options = bisect_run.Options(log=log, replay_from=replay, timeout=args.timeout, jobs=args.jobs)
    try:
        if args.git is not None:
            outcome = bisect_run.bisect_git(Path(args.git), args.good, args.bad, args.test, args.config,
                                            args.series, args.overrides, log, options=options)
        else:
            outcome = bisect_run.bisect_series(args.series, args.test, args.config, args.overrides, log,
                                               kernel_src=args.kernel_src, options=options)
    except BaseException:
        if log.is_file() and log.stat().st_size > 0 and replay is None:
            print(f"harness: bisect log {log} (resume with --replay {log})", file=sys.stderr)
        raise
    print(bisect_run.describe_outcome(outcome, bisect_run.log_candidates(log)))
    print(f"bisect log: {log} (resume or re-read with --replay {log})")
    return 0 if outcome.first_bad is not None else 1


def cmd_review(args: argparse.Namespace) -> int:
    """``harness review FILE``: 0 no bug found, 1 bugs found, 2 could not test (review.txt says why)."""
    from harness.review import render
    from harness.review import run as review

    rv = review.review(review.Options(
        file=Path(args.file), base=args.base, repair=args.repair,
        with_series=None if args.with_series in ("", "none") else args.with_series,
        configs=tuple(args.configs or ("default", "debug")), results_parent=Path(args.results),
        kernel_src=args.kernel_src, jobs=args.jobs))
    print(f"harness: review {rv.path / review.REVIEW_TXT}: {render.verdict(rv)}", file=sys.stderr)
    return rv.exit_code


def cmd_repro(args: argparse.Namespace) -> int:
    from harness.review import reprocmd

    return reprocmd.main(args.nodeid, args.series, args.config, args.results)


def register(sub: Any) -> None:
    """Add this module's commands to the parser's subcommands."""
    p = sub.add_parser("test", help="run the rcfs suite per kernel into a results directory")
    p.add_argument("--config", default=None, help="only this config (default: every matrix config)")
    p.add_argument("--series", default=None, help="only this series (default: every matrix series)")
    p.add_argument("--matrix", action="store_true", help="every (config, series) cell of the matrix")
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N shares of the cells")
    p.add_argument("--results", default="results", help="parent of the results directory")
    p.add_argument("-j", "--jobs", type=int, default=None, help="cells at a time (default: cores)")
    p.add_argument("--coverage", action="store_true",
                   help="measure which lines the patch adds ran (kernels with debug info, traced VMs): "
                        "coverage.json and coverage.html in the results")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- extra pytest arguments")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("report", help="results directories")
    rsub = p.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    m = rsub.add_parser("merge", help="merge shard results into one directory")
    m.add_argument("dirs", nargs="+", help="results directories of the shards")
    m.add_argument("-o", "--output", required=True, help="merged results directory")
    m.set_defaults(func=cmd_report_merge)

    p = sub.add_parser("bisect", help="find the patch or commit that makes a test fail")
    p.add_argument("--series", default=None, metavar="NAME",
                   help="bisect the patches of this series; with --git: the series applied on top "
                        "of every commit (e.g. compat)")
    p.add_argument("--git", default=None, metavar="PATH", help="bisect the commits of this git repository")
    p.add_argument("--good", default=None, metavar="REF", help="with --git: a commit where the test passes")
    p.add_argument("--bad", default=None, metavar="REF", help="with --git: a commit where the test fails")
    p.add_argument("--test", required=True, metavar="NODEID", help="the pytest node id to run at each step")
    p.add_argument("--config", default="default", help="named kernel config (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SYMBOL=VALUE",
                   help="override a config symbol (repeatable)")
    p.add_argument("--kernel-src", default=None, metavar="SRC",
                   help="--series mode: the 2.6.20 source (or $HARNESS_KERNEL_SRC)")
    p.add_argument("--log", default=None, metavar="PATH",
                   help="JSON-lines log of the steps (default $HARNESS_CACHE/bisect/<timestamp>.jsonl)")
    p.add_argument("--replay", default=None, metavar="PATH",
                   help="reuse the verdicts recorded in this log (resume); it is also the log unless --log")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                   help="seconds one test run (boot + test) may take (default 900)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs")
    p.set_defaults(func=cmd_bisect)

    p = sub.add_parser("review", help="review a posted patch: build, test, write a reply (review.txt)")
    p.add_argument("file", help="a mail, mbox, web-archive page or .patch holding the patch")
    p.add_argument("--base", default="compat", help="series the patch goes on (default: compat)")
    p.add_argument("--repair", default=None, metavar="SERIES",
                   help="insert this series' own patches after the posted one (e.g. rcfs)")
    p.add_argument("--with", dest="with_series", default="rcfs-testss", metavar="SERIES",
                   help="series whose own patches go on top (default: rcfs-testss; 'none': nothing)")
    p.add_argument("--config", dest="configs", action="append", default=None, metavar="NAME",
                   help="a config to build and test (repeatable; default: default and debug)")
    p.add_argument("--results", default="results", help="parent of the results directory")
    p.add_argument("--kernel-src", default=None, metavar="SRC")
    p.add_argument("-j", "--jobs", type=int, default=None, help="kernels tested at a time")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("repro", help="print the reproducer script of one test")
    p.add_argument("nodeid", help="the test's node id, e.g. test_rmdir.py::test_rmdir_with_task_is_ebusy")
    p.add_argument("--series", default="rcfs-testss", help="run it on this series (default: rcfs-testss)")
    p.add_argument("--config", default="default", help="config for a test without a kernel marker")
    p.add_argument("--from", dest="results", default=None, metavar="DIR",
                   help="take the test's recorded commands from this results directory instead of running it")
    p.set_defaults(func=cmd_repro)
