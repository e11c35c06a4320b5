"""Arguments several commands share, and their checks before any work is done."""

from __future__ import annotations

import argparse

from harness.errors import InputError
from harness.run.target import BootOptions, KernelSpec


def add_kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="default", help="named kernel config (default: default)")
    p.add_argument("--series", default="rcfs", help="patch series (default: rcfs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SYMBOL=VALUE",
                   help="override a config symbol (repeatable)")
    p.add_argument("--kernel-src", default=None, metavar="SRC",
                   help="2.6.20 directory, tarball or git PATH@REF (or $HARNESS_KERNEL_SRC)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs")


def add_vm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--boot-timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds from QEMU start to SSH login (default 60)")
    p.add_argument("--kvm", action="store_true", help="use KVM (2.6.20 hangs under KVM on some hosts)")


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
