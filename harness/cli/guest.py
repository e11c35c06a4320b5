"""Commands that boot a guest: boot, ssh (into a kept VM), run."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cli.common import add_kernel_args, add_vm_args, boot_options, kernel_spec
from harness.errors import GuestCrash, HarnessTimeout, InputError


def _connect_hint(port: int | None, key: Path) -> str:
    return f"ssh -i {key} -p {port} root@127.0.0.1   (with the host key pinned: harness ssh)"


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


def register(sub: Any) -> None:
    """Add this module's commands to the parser's subcommands."""
    p = sub.add_parser("boot", help="build if needed, boot, print how to connect")
    add_kernel_args(p)
    add_vm_args(p)
    p.add_argument("--keep", action="store_true", help="stay up until interrupted (see: harness ssh)")
    p.set_defaults(func=cmd_boot)

    p = sub.add_parser("ssh", help="open a shell (or run CMD) in the VM kept by 'harness boot --keep'")
    p.add_argument("--user", default="root", help="guest user (root, alice, bob)")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_ssh)

    p = sub.add_parser("run", help="build if needed, boot, run CMD in the guest, exit with its status")
    add_kernel_args(p)
    add_vm_args(p)
    p.add_argument("--user", default="root", help="guest user (root, alice, bob)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds the command may take")
    p.add_argument("--no-stdin", action="store_true",
                   help="do not pass this process's stdin (a file or pipe) to the command")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD...")
    p.set_defaults(func=cmd_run)
