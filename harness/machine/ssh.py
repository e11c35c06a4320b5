"""Commands and files on the guest over SSH: a :class:`Guest` holds one connection per user.

The guest runs dropbear, which has no sftp-server: files travel through
``cat > path`` and ``cat path``, which are 8-bit clean.

Two kinds of failure are kept apart:

* the machinery failed -- the connection was refused or dropped, the key was
  rejected, the VM is gone, a command outlived its timeout: an
  :class:`SSHError` (an :class:`~harness.errors.InfraError`), so a test that
  hits one is an ERROR, not a FAIL;
* the command ran and failed: a :class:`CommandResult` with a non-zero
  ``exit_status``; ``check=True`` turns it into :class:`CommandFailed`, which
  is *not* an InfraError.

A list command is quoted with :func:`shlex.join`, so values never reach the
guest's shell unquoted.  Every user logs in as itself with its own key (no
``su``).  Commands without input run in the user's long-lived shell
(:mod:`harness.machine.shell`, one channel, no session set-up per command);
commands with input, or whose output is streamed, get an exec channel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from harness.errors import HarnessError
from harness.machine.shell import Shell, ShellGone, ShellTimeout, kill_children_script
from harness.machine.ssh_transport import (
    SIGNALS,
    SSHAuthError,
    SSHConnectError,
    SSHDisconnected,
    SSHError,
    SSHGuestDown,
    SSHHostKeyError,
    SSHTimeout,
    authenticate,
    load_key,
    send_signal,
    tcp_connect,
)

__all__ = ["SIGNALS", "CommandFailed", "CommandResult", "Guest", "SSHAuthError", "SSHConnectError",
           "SSHDisconnected", "SSHError", "SSHGuestDown", "SSHHostKeyError", "SSHTimeout",
           "command_line", "load_key"]

log = logging.getLogger(__name__)

_CHUNK = 32768
Sink = Callable[[bytes], None]


class CommandFailed(HarnessError):
    """``check=True`` and the command exited non-zero.  Not an InfraError."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        how = f"signal {result.signal}" if result.signal else f"exit {result.exit_status}"
        super().__init__(f"{result.cmd!r} as {result.user} failed ({how}){detail}")


@dataclass(frozen=True)
class CommandResult:
    cmd: str
    user: str
    exit_status: int  # 128 + n when killed by signal n (as a shell says); -1 if unknown
    stdout: str
    stderr: str
    duration: float
    stdout_bytes: bytes = field(default=b"", repr=False)
    signal: str | None = None  # "SEGV"... when the server sent exit-signal (exec channels)
    stderr_bytes: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def check(self) -> CommandResult:
        if not self.ok:
            raise CommandFailed(self)
        return self


def command_line(cmd: str | Sequence[str]) -> str:
    """The string sent to the guest: a str is a shell command, a list is quoted."""
    if isinstance(cmd, str):
        return cmd
    args = list(cmd)
    if not args:
        raise ValueError("empty command")
    return shlex.join(str(a) for a in args)


@dataclass
class Guest:
    """An SSH server (the VM's forwarded port) and one key per user."""

    host: str = "127.0.0.1"
    port: int = 22
    keys: Mapping[str, Path] = field(default_factory=dict)
    host_key: str | None = None  # "ssh-ed25519 AAAA...": checked when given
    alive: Callable[[], bool] | None = field(default=None, repr=False)  # is the VM running?
    name: str = "guest"
    _transports: dict[str, paramiko.Transport] = field(default_factory=dict, init=False, repr=False)
    _shells: dict[str, Shell] = field(default_factory=dict, init=False, repr=False)
    _pkeys: dict[str, paramiko.PKey] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _reached: bool = field(default=False, init=False, repr=False)  # a login has worked

    # -- connections --------------------------------------------------------------

    def where(self, user: str) -> str:
        return f"{user}@{self.host}:{self.port} ({self.name})"

    def _key(self, user: str) -> paramiko.PKey:
        if user not in self._pkeys:
            try:
                path = self.keys[user]
            except KeyError:
                raise SSHAuthError(
                    f"{self.name}: no ssh key for user {user!r} (have: {', '.join(self.keys) or 'none'})"
                ) from None
            self._pkeys[user] = load_key(path)
        return self._pkeys[user]

    def _check_alive(self, wait: float = 0.0) -> None:
        """Raise :class:`SSHGuestDown` if the VM is gone (waiting up to ``wait`` s to see it go)."""
        if self.alive is None:
            return
        end = time.monotonic() + wait
        while self.alive():
            if time.monotonic() >= end:
                return
            time.sleep(0.05)
        raise SSHGuestDown(f"{self.name}: the VM is not running")

    def _connect(self, user: str, deadline: float) -> paramiko.Transport:
        """One connection attempt (TCP connect, handshake, login) by ``deadline``."""
        pkey = self._key(user)
        self._check_alive()
        try:
            sock = tcp_connect(self.host, self.port, max(0.1, deadline - time.monotonic()))
        except OSError as exc:
            # QEMU listens on the forwarded port as long as it runs: once the guest
            # was reachable, a refused or reset connection means QEMU is going (wait
            # to see it go: SSHGuestDown); before that, QEMU may still be starting
            self._check_alive(wait=1.0 if self._reached else 0.0)
            why = ("connection refused" if isinstance(exc, ConnectionRefusedError)
                   else "TCP connect timed out" if isinstance(exc, TimeoutError) else str(exc))
            raise SSHConnectError(f"{self.where(user)}: {why}") from None
        try:
            transport = authenticate(sock, self.where(user), user, pkey, self.keys.get(user),
                                     self.host_key, deadline)
        except (SSHConnectError, SSHDisconnected) as exc:
            if not isinstance(exc, SSHHostKeyError):
                self._check_alive()
            raise
        self._reached = True
        return transport

    def connection(self, user: str = "root", timeout: float | None = None) -> paramiko.Transport:
        """The cached, live connection of ``user``; (re)connects when needed."""
        with self._lock:
            t = self._transports.get(user)
            if t is not None and t.is_active():
                return t
            if t is not None:
                log.info("%s: connection dropped, reconnecting", self.where(user))
                self._drop(user)
            t = self._connect(user, time.monotonic() + (30.0 if timeout is None else timeout))
            self._transports[user] = t
            return t

    def wait_ready(self, deadline: float, poll: float = 0.05, user: str = "root") -> float:
        """Log ``user`` in, retrying connection problems every ``poll`` seconds; the seconds it took.

        Call it when the guest is known to be up (its sshd-up milestone, or
        QEMU's RESUME): the first attempt normally succeeds.  A rejected key
        or a wrong host key is not retried.  Raises :class:`SSHTimeout` at
        ``deadline`` (a :func:`time.monotonic` value) with the last problem
        seen, :class:`SSHGuestDown` as soon as the VM is gone.
        """
        start = time.monotonic()
        last: Exception | None = None
        attempts = 0
        while True:
            attempts += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise SSHTimeout(f"{self.where(user)}: no SSH login after {time.monotonic() - start:.1f}s "
                                 f"({attempts - 1} attempts; last: {last})")
            try:
                self.connection(user, timeout=left)
                log.debug("%s: ssh ready after %d attempt(s)", self.where(user), attempts)
                return time.monotonic() - start
            except (SSHHostKeyError, SSHAuthError, SSHGuestDown):
                raise
            except SSHError as exc:
                last = exc
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))

    def _drop(self, user: str) -> None:
        with self._lock:
            shell = self._shells.pop(user, None)
            t = self._transports.pop(user, None)
        if shell is not None:
            shell.close()
        if t is not None:
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):  # the guest may be gone
                t.close()

    def close(self) -> None:
        with self._lock:
            for user in list(self._transports):
                self._drop(user)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------

    def run(self, cmd: str | Sequence[str], user: str = "root", timeout: float = 60,
            check: bool = False, input: str | bytes | None = None, fresh: bool = False) -> CommandResult:
        """Run ``cmd`` as ``user``; the whole call (connecting included) is bounded by ``timeout``.

        ``fresh``: on its own exec channel instead of the user's shell (a
        signal that kills the command is then reported by name).
        """
        cmdline = command_line(cmd)
        start = time.monotonic()
        log.info("ssh %s: %s", self.where(user), cmdline if len(cmdline) < 300 else cmdline[:300] + "...")
        if input is None and not fresh:
            status, out, err, sig = self._run_in_shell(user, cmdline, start + timeout, timeout)
        else:
            data = input.encode() if isinstance(input, str) else (input or b"")
            outs: list[bytes] = []
            errs: list[bytes] = []
            status, sig = self.stream(cmdline, outs.append, errs.append, user=user,
                                      timeout=timeout, input=data, _start=start)
            out, err = b"".join(outs), b"".join(errs)
        result = CommandResult(cmdline, user, status, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - start, out, sig, err)
        log.debug("ssh %s: exit %s in %.2fs", self.where(user), status, result.duration)
        if check:
            result.check()
        return result

    def _shell(self, user: str, deadline: float) -> Shell:
        with self._lock:
            shell = self._shells.get(user)
            if shell is not None and shell.usable:
                return shell
            if shell is not None:
                self._shells.pop(user).close()
            shell = Shell.open(self.connection(user, timeout=max(0.1, deadline - time.monotonic())),
                               deadline)
            self._shells[user] = shell
            return shell

    def _run_in_shell(self, user: str, cmdline: str, deadline: float,
                      timeout: float) -> tuple[int, bytes, bytes, str | None]:
        for attempt in (1, 2):
            try:
                shell = self._shell(user, deadline)
            except ShellGone as exc:
                problem = str(exc)
            else:
                try:
                    result = shell.run(cmdline, deadline)
                    return result.status, result.stdout, result.stderr, None
                except ShellTimeout:
                    self._abandon_shell_command(user, shell)
                    raise SSHTimeout(
                        f"{self.where(user)}: {cmdline!r} timed out after {timeout:g}s") from None
                except ShellGone as exc:
                    self._shells.pop(user, None)
                    shell.close()
                    self._check_alive(wait=1.0)
                    raise SSHDisconnected(f"{self.where(user)}: {exc} while running {cmdline!r}") from None
            if attempt == 2 or time.monotonic() >= deadline:
                self._check_alive()
                raise SSHDisconnected(f"{self.where(user)}: {problem}")
            self._drop(user)  # the connection died since it was last used: make a new one
        raise AssertionError("unreachable")  # pragma: no cover

    def _abandon_shell_command(self, user: str, shell: Shell) -> None:
        """Kill a timed-out command (the shell's child) and drain it, so the shell stays usable."""
        try:
            self.run(kill_children_script(shell.pid), user=user, timeout=5, fresh=True)
            shell.finish(time.monotonic() + 2.0)
        except (SSHError, ShellGone, ShellTimeout) as exc:
            log.info("%s: dropping the shell of a timed-out command: %s", self.where(user), exc)
            with self._lock:
                if self._shells.get(user) is shell:
                    del self._shells[user]
            shell.close()

    def stream(self, cmd: str | Sequence[str], on_stdout: Sink, on_stderr: Sink, *, user: str = "root",
               timeout: float = 60, input: bytes | None = None,
               _start: float | None = None) -> tuple[int, str | None]:
        """Run ``cmd`` on an exec channel, handing its output bytes to the sinks as they come.

        Memory stays bounded whatever the output's size.  Returns (exit
        status, signal name or None).
        """
        cmdline = command_line(cmd)
        start = time.monotonic() if _start is None else _start
        deadline = start + timeout
        chan = self._start(user, cmdline, deadline, timeout)
        try:
            self._pump(chan, input or b"", deadline, cmdline, user, timeout, on_stdout, on_stderr)
            status = chan.exit_status
            sig: str | None = getattr(chan, "harness_signal", None)
        finally:
            chan.close()
        return status, sig

    def _start(self, user: str, cmdline: str, deadline: float, timeout: float) -> paramiko.Channel:
        """A session channel running ``cmdline``.

        If the cached connection turns out dead before the command started
        (the session or the exec request failed and the connection is gone)
        it is re-made once: dropbear has been seen to end a session right after
        a channel was closed from this side.
        """
        for attempt in (1, 2):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SSHTimeout(f"{self.where(user)}: {cmdline!r} timed out after {timeout:g}s "
                                 "before it started")
            t = self.connection(user, timeout=left)
            try:
                chan = t.open_session(timeout=max(0.1, deadline - time.monotonic()))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                problem = f"cannot open a session: {exc}"
            else:
                # paramiko waits for the exec reply without a timeout: close the
                # channel at the deadline to wake it up (a hung guest).
                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), chan.close)
                watchdog.daemon = True
                watchdog.start()
                try:
                    chan.exec_command(cmdline)
                    return chan
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    chan.close()
                    problem = f"exec of {cmdline!r} failed: {exc}"
                finally:
                    watchdog.cancel()
            if time.monotonic() >= deadline:
                raise SSHTimeout(f"{self.where(user)}: {cmdline!r} timed out after {timeout:g}s "
                                 f"before it started ({problem})")
            dead = not t.is_active()
            if attempt == 2 or not dead:
                self._check_alive()
                raise SSHDisconnected(f"{self.where(user)}: {problem}")
            self._drop(user)
            log.info("%s: %s; retrying on a new connection", self.where(user), problem)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pump(self, chan: paramiko.Channel, data: bytes, deadline: float, cmdline: str, user: str,
              timeout: float, on_stdout: Sink, on_stderr: Sink) -> None:
        pending = memoryview(data)
        if not pending:
            chan.shutdown_write()
        transport = chan.get_transport()
        while True:
            while chan.recv_ready():
                on_stdout(chan.recv(_CHUNK))
            while chan.recv_stderr_ready():
                on_stderr(chan.recv_stderr(_CHUNK))
            if pending and chan.send_ready():
                try:
                    n = chan.send(bytes(pending[:_CHUNK]))
                except (OSError, paramiko.SSHException, EOFError):
                    n = len(pending)  # the command stopped reading; its status says why
                pending = pending[n:]
                if not pending:
                    chan.shutdown_write()
                continue
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            got_status = chan.exit_status != -1 or hasattr(chan, "harness_signal")
            if drained and got_status and (chan.closed or chan.eof_received):
                return
            alive = transport is not None and transport.is_active()
            if drained and chan.closed and alive:
                return  # closed without an exit status: reported as -1
            if not alive:
                self._check_alive()
                raise SSHDisconnected(f"{self.where(user)}: connection dropped while running {cmdline!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                self._abandon(chan)
                raise SSHTimeout(f"{self.where(user)}: {cmdline!r} timed out after {timeout:g}s")
            select.select([chan], [], [], min(left, 0.05 if pending else 0.5))

    @staticmethod
    def _abandon(chan: paramiko.Channel, grace: float = 2.0) -> None:
        """Kill a timed-out command and let the server close the channel first.

        Closing it from this side while the command still runs has been seen
        to make dropbear 2022.83 end the whole session.
        """
        send_signal(chan, "KILL")
        transport = chan.get_transport()
        end = time.monotonic() + grace
        while not chan.closed and time.monotonic() < end and transport is not None and transport.is_active():
            select.select([chan], [], [], 0.1)
            while chan.recv_ready():
                chan.recv(_CHUNK)
            while chan.recv_stderr_ready():
                chan.recv_stderr(_CHUNK)
        chan.close()

    # -- files ----------------------------------------------------------------------

    def put(self, src: bytes | str | os.PathLike[str], remote_path: str, mode: int = 0o644,
            user: str = "root", timeout: float = 120) -> None:
        """Write ``src`` (bytes, or a local file's contents) to ``remote_path``."""
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        q = shlex.quote(remote_path)
        self.run(f"cat > {q} && chmod {mode:o} {q}", user=user, input=data, timeout=timeout, check=True)

    def get(self, remote_path: str, user: str = "root", timeout: float = 120) -> bytes:
        """The contents of ``remote_path`` (raises :class:`CommandFailed` if unreadable)."""
        return self.run(["cat", "--", remote_path], user=user, timeout=timeout, check=True).stdout_bytes
