"""The ``harness`` command line: the parser, and the one place errors become exit codes.

The codes are the table in :mod:`harness.errors`; the commands live in
:mod:`harness.cli.kernel`, :mod:`harness.cli.guest` and :mod:`harness.cli.suite`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from harness import __version__
from harness.cli import guest, kernel, suite
from harness.cli.common import check_arguments
from harness.errors import ExitCode, HarnessError

Handler = Callable[[argparse.Namespace], int]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="Build, boot and test Linux 2.6.20 with the rcfs patch."
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (kernel, guest, suite):
        module.register(sub)
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
