"""The ``harness`` command line.

Exit codes (documented in README.md):

* 0: success;
* 1: tests failed (``test``) or the command failed in the guest (``run``
  passes the guest command's own status through);
* 2: bad input, a stage failure or an infrastructure error, with a one-line
  message on stderr;
* 125: ``run`` only: the kernel crashed or the VM failed, so the guest
  command has no status;
* 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError, InputError

Handler = Callable[[argparse.Namespace], int]


def _add_kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="default", help="named kernel config (default: default)")
    p.add_argument("--series", default="rcfs", help="patch series (default: rcfs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SYMBOL=VALUE",
                   help="override a config symbol (repeatable)")
    p.add_argument("--kernel-src", default=None, metavar="SRC",
                   help="2.6.20 directory, tarball or git PATH@REF (or $HARNESS_KERNEL_SRC)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs")


def build_kernel(args: argparse.Namespace, *, force: bool = False):  # type: ignore[no-untyped-def]
    """Resolve source, series and config from CLI args and build (shared by several commands)."""
    from harness import build, config, patches, source

    series = patches.load_series(args.series)
    request_config = config.render(args.config, series_chain=series.chain, overrides=args.overrides)
    src = source.resolve(args.kernel_src)
    kwargs = {"jobs": args.jobs} if args.jobs else {}
    req = build.BuildRequest(source=src, series=series, config=request_config, **kwargs)
    return build.build(req, force=force)


def cmd_build(args: argparse.Namespace) -> int:
    result = build_kernel(args, force=args.force)
    state = "cached" if result.cached else f"built in {result.duration:.1f}s"
    print(f"harness: {state}, {result.warnings} warnings; metadata {result.meta_path}",
          file=sys.stderr)
    print(result.bzimage)
    return 0


def cmd_import_patch(args: argparse.Namespace) -> int:
    from harness import importer, source

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
    from harness import config

    for name, definition in sorted(config.load_defs().items()):
        print(f"{name:12} {definition.description}")
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    from harness import patches

    if args.name:
        series = patches.load_series(args.name)
        print(f"{series.name}: {' -> '.join(series.chain)}")
        for patch in series.patches:
            print(f"  {patch.series}/{patch.name}  {patch.subject}")
        return 0
    for name in patches.available():
        series = patches.load_series(name)
        base = " -> ".join(series.chain[:-1]) or "(pristine)"
        print(f"{name:14} {len(series.own_patches())} patches, on {base}")
    return 0


def cmd_source(args: argparse.Namespace) -> int:
    from harness import source

    src = source.resolve(args.kernel_src, allow_download=not args.no_download)
    print(f"harness: {src.origin} (id {src.id})", file=sys.stderr)
    print(src.tree)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness import doctor

    return doctor.run(do_install=args.install)


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

    p = sub.add_parser("import-patch", help="recover a clean diff from a quoted email/web archive")
    p.add_argument("file", help="the email or archive text")
    p.add_argument("-o", "--output", help="write the patch here (default: stdout)")
    p.add_argument("--against", metavar="SRC",
                   help="pristine tree (or any --kernel-src value) to restore context from")
    p.add_argument("--no-tree", action="store_true", help="do not look for a cached tree")
    p.set_defaults(func=cmd_import_patch)

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
        return func(args)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
