"""The ``harness`` command line (exit codes: the table in :mod:`harness.errors`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import ExitCode, GuestCrash, HarnessError, HarnessTimeout, InputError
from harness.run.target import BootOptions, KernelSpec

Handler = Callable[[argparse.Namespace], int]


def _add_kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="default", help="named kernel config (default: default)")
    p.add_argument("--series", default="rcfs", help="patch series (default: rcfs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SYMBOL=VALUE",
                   help="override a config symbol (repeatable)")
    p.add_argument("--kernel-src", default=None, metavar="SRC",
                   help="2.6.20 directory, tarball or git PATH@REF (or $HARNESS_KERNEL_SRC)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs")


def check_arguments(args: argparse.Namespace) -> None:
    """What every command's arguments must satisfy, checked before any work is done:
    ``-j`` is 1 or more, and every ``--set`` is a SYMBOL=VALUE whose value is safe for kbuild."""
    from harness.kernel import config

    jobs = getattr(args, "jobs", None)
    if jobs is not None and jobs < 1:
        raise InputError(f"-j {jobs}: expected a number of parallel jobs, 1 or more")
    for text in getattr(args, "overrides", None) or ():
        config.parse_set(text)


def kernel_spec(args: argparse.Namespace) -> KernelSpec:
    return KernelSpec(config=args.config, series=args.series, overrides=tuple(args.overrides),
                      kernel_src=args.kernel_src)


def boot_options(args: argparse.Namespace, snapshot: bool = True) -> BootOptions:
    return BootOptions(boot_timeout=args.boot_timeout, kvm=args.kvm, snapshot=snapshot)


def cmd_build(args: argparse.Namespace) -> int:
    from harness.run import target

    result = target.build_kernel(kernel_spec(args), jobs=args.jobs, force=args.force)
    state = "cached" if result.cached else f"built in {result.duration:.1f}s"
    print(f"harness: {state}, {result.warnings} warnings; metadata {result.meta_path}",
          file=sys.stderr)
    print(result.bzimage)
    return 0


def cmd_import_patch(args: argparse.Namespace) -> int:
    from harness.kernel import importer, source

    path = Path(args.file)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); expected a patch or email text") from None
    against: Path | None = None
    if args.against:
        against = Path(args.against)
        if not against.is_dir():
            against = source.resolve(args.against).tree
    elif not args.no_tree:
        try:
            against = source.resolve(None, allow_download=False).tree
        except HarnessError:
            against = None
    result = importer.import_patch(text, against=against)
    for warning in result.warnings:
        print(f"harness: import: {warning}", file=sys.stderr)
    if against is None:
        print("harness: import: no source tree: context whitespace not restored "
              "(give --against SRC)", file=sys.stderr)
    rendered = result.render()
    if args.output:
        Path(args.output).write_text(rendered)
        print(f"harness: wrote {args.output} ({len(result.files)} files)", file=sys.stderr)
    else:
        sys.stdout.write(rendered)
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from harness.kernel import config

    for name, definition in sorted(config.load_defs().items()):
        print(f"{name:12} {definition.description}")
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    from harness.kernel import patches

    if args.name:
        series = patches.load_series(args.name)
        print(f"{series.name}: {' -> '.join(series.chain)}")
        for patch in series.patches:
            print(f"  {patch.series}/{patch.name}  {patch.subject}", flush=True)
        return 0
    for name in patches.available():
        series = patches.load_series(name)
        base = " -> ".join(series.chain[:-1]) or "(pristine)"
        print(f"{name:14} {len(series.own_patches())} patches, on {base}")
    return 0


def cmd_source(args: argparse.Namespace) -> int:
    from harness.kernel import source

    src = source.resolve(args.kernel_src, allow_download=not args.no_download)
    print(f"harness: {src.origin} (id {src.id})", file=sys.stderr)
    print(src.tree)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from harness import image

    img = image.build_image(image.resolve_recipe(args.recipe), force=args.force)
    print(f"harness: image {img.recipe_name} ({img.recipe_hash}), "
          f"{'cached' if img.cached else 'built'}; keys in {img.directory / 'keys'}", file=sys.stderr)
    print(img.initramfs)
    return 0


def _connect_hint(port: int | None, key: Path) -> str:
    return f"ssh -i {key} -p {port} root@127.0.0.1   (with the host key pinned: harness ssh)"


def cmd_boot(args: argparse.Namespace) -> int:
    import signal
    import threading

    from harness.run import kept, target

    prepared = target.prepare(kernel_spec(args), jobs=args.jobs)
    # a real boot, not a resumed one: its console shows the kernel coming up
    with target.booted(prepared, boot_options(args, snapshot=False)) as vm:
        info = vm.boot_info
        seconds = f" in {info.boot_seconds:.1f}s" if info else ""
        print(f"harness: {prepared.spec.label} booted{seconds}; console log {vm.console_log}",
              file=sys.stderr)
        print(_connect_hint(vm.port, prepared.image.client_key("root")))
        if not args.keep:
            return 0
        kept.write(vm, prepared)
        print("harness: kept running; Ctrl-C to stop", file=sys.stderr)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                if not vm.alive():
                    crash = vm.crash()
                    raise GuestCrash(f"the VM stopped{': ' + str(crash) if crash else ''}")
        except KeyboardInterrupt:
            pass
        finally:
            kept.clear()
        print("harness: stopping the VM", file=sys.stderr)
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    from harness import proc
    from harness.run import kept

    vm = kept.read()
    if vm is None:
        raise InputError("no kept VM is running; start one with: harness boot --keep")
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    proc.replace_process(kept.ssh_argv(vm, args.user, command))
    return 0  # not reached


def _guest_user(user: str, recipe: str = "default") -> None:
    """Refuse an unknown guest user before anything is built or booted."""
    from harness import image

    known = [u.name for u in image.resolve_recipe(recipe).users]
    if user not in known:
        raise InputError(f"--user {user!r}: no such guest user (expected one of: {', '.join(known)})")


def _stdin_data(disabled: bool) -> bytes | None:
    """What ``harness run`` feeds the guest command: its own stdin when that is a file or a
    pipe (``harness run -- sh -s < script.sh``); never a terminal's."""
    import stat

    if disabled:
        return None
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return None
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    return sys.stdin.buffer.read()


def cmd_run(args: argparse.Namespace) -> int:
    """Exit with the guest command's status; its output bytes pass through unchanged, as they come."""
    from harness.machine.ssh import SSHDisconnected, SSHTimeout
    from harness.run import target

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise InputError("harness run: no command given; expected: harness run [options] -- CMD...")
    if not args.timeout > 0:
        raise InputError(f"--timeout {args.timeout:g}: expected a positive number of seconds")
    _guest_user(args.user)
    data = _stdin_data(args.no_stdin)
    prepared = target.prepare(kernel_spec(args), jobs=args.jobs)
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def write(stream: Any) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            stream.write(data)
            stream.flush()
        return sink

    sys.stdout.flush()
    with target.booted(prepared, boot_options(args)) as vm:
        try:
            status, _ = vm.ssh.stream(command, write(out), write(err), user=args.user,
                                      timeout=args.timeout, input=data)
        except SSHTimeout:
            raise HarnessTimeout(f"harness run: the command did not finish within --timeout "
                                 f"{args.timeout:g}s (it was killed)") from None
        except SSHDisconnected as exc:
            crash = vm.crash()
            raise GuestCrash(f"the guest kernel crashed: {crash}\n{crash.excerpt}" if crash
                             else f"the VM went away under the command: {exc}") from None
        vm.sync_console()
        crash = vm.crash()
        if crash is not None:
            raise GuestCrash(f"the guest kernel crashed: {crash}\n{crash.excerpt}")
        return status


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
    path, code = testrun.run(cells, results_parent=Path(args.results), extra=extra, jobs=args.jobs)
    testrun.print_summary(path)
    return code


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


def cmd_report_merge(args: argparse.Namespace) -> int:
    from harness import results as report
    from harness.run import matrix as testrun

    summary = report.merge([Path(d) for d in args.dirs], Path(args.output))
    testrun.print_summary(Path(args.output))
    return report.exit_code(summary)


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


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness import doctor

    return doctor.run(do_install=args.install)


def _add_vm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--boot-timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds from QEMU start to SSH login (default 60)")
    p.add_argument("--kvm", action="store_true", help="use KVM (2.6.20 hangs under KVM on some hosts)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Build, boot and test Linux 2.6.20 with the rcfs patch."
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="build a kernel (cached) and print the bzImage path")
    _add_kernel_args(p)
    p.add_argument("--force", action="store_true", help="rebuild even on a cache hit")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("image", help="build the guest initramfs (cached) and print its path")
    p.add_argument("--recipe", default="default", help="image recipe name or path (default: default)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("boot", help="build if needed, boot, print how to connect")
    _add_kernel_args(p)
    _add_vm_args(p)
    p.add_argument("--keep", action="store_true", help="stay up until interrupted (see: harness ssh)")
    p.set_defaults(func=cmd_boot)

    p = sub.add_parser("ssh", help="open a shell (or run CMD) in the VM kept by 'harness boot --keep'")
    p.add_argument("--user", default="root", help="guest user (root, alice, bob)")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("run", help="build if needed, boot, run CMD in the guest, exit with its status")
    _add_kernel_args(p)
    _add_vm_args(p)
    p.add_argument("--user", default="root", help="guest user (root, alice, bob)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds the command may take")
    p.add_argument("--no-stdin", action="store_true",
                   help="do not pass this process's stdin (a file or pipe) to the command")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("test", help="run the rcfs suite per kernel into a results directory")
    p.add_argument("--config", default=None, help="only this config (default: every matrix config)")
    p.add_argument("--series", default=None, help="only this series (default: every matrix series)")
    p.add_argument("--matrix", action="store_true", help="every (config, series) cell of the matrix")
    p.add_argument("--shard", default=None, metavar="I/N", help="run the I-th of N shares of the cells")
    p.add_argument("--results", default="results", help="parent of the results directory")
    p.add_argument("-j", "--jobs", type=int, default=None, help="cells at a time (default: cores)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- extra pytest arguments")
    p.set_defaults(func=cmd_test)

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

    p = sub.add_parser("report", help="results directories")
    rsub = p.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    m = rsub.add_parser("merge", help="merge shard results into one directory")
    m.add_argument("dirs", nargs="+", help="results directories of the shards")
    m.add_argument("-o", "--output", required=True, help="merged results directory")
    m.set_defaults(func=cmd_report_merge)

    p = sub.add_parser("import-patch", help="recover a clean diff from a quoted email/web archive")
    p.add_argument("file", help="the email or archive text")
    p.add_argument("-o", "--output", help="write the patch here (default: stdout)")
    p.add_argument("--against", metavar="SRC",
                   help="pristine tree (or any --kernel-src value) to restore context from")
    p.add_argument("--no-tree", action="store_true", help="do not look for a cached tree")
    p.set_defaults(func=cmd_import_patch)

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

    p = sub.add_parser("configs", help="list the named kernel configs")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("series", help="list patch series, or the patches of one")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_series)

    p = sub.add_parser("source", help="resolve the kernel source and print the pristine tree")
    p.add_argument("--kernel-src", default=None, metavar="SRC")
    p.add_argument("--no-download", action="store_true")
    p.set_defaults(func=cmd_source)

    p = sub.add_parser("doctor", help="check (and with --install, install) what the harness needs")
    p.add_argument("--install", action="store_true", help="install missing Debian packages (root)")
    p.set_defaults(func=cmd_doctor)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="harness: %(message)s",
        stream=sys.stderr,
    )
    func: Handler = args.func
    try:
        check_arguments(args)
        return func(args)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `harness series | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return int(ExitCode.OK)
