"""Commands and files on the guest over SSH (paramiko, public keys only).

The guest runs dropbear, which has no sftp-server: files travel through
``cat > path`` and ``cat path`` on exec channels, which are 8-bit clean.

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
``su``); one connection per user is kept and re-opened when it was dropped.
"""

from __future__ import annotations

import base64
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from harness.errors import HarnessError, InfraError

log = logging.getLogger(__name__)

#: seconds a single connection attempt may take (TCP connect, banner, auth)
CONNECT_TIMEOUT = 10.0
_CHUNK = 32768

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
}


# =====================================================================================
# Errors


class SSHError(InfraError):
    """The SSH machinery failed (not the command)."""


class SSHConnectError(SSHError):
    """No SSH session could be set up: refused, reset, no banner, handshake failed."""


class SSHHostKeyError(SSHConnectError):
    """The server's host key is not the one expected (another VM on this port?)."""


class SSHAuthError(SSHError):
    """The server rejected the user's key."""


class SSHDisconnected(SSHError):
    """The connection dropped while in use (the guest crashed or rebooted?)."""


class SSHGuestDown(SSHDisconnected):
    """The VM behind the connection is not running any more."""


class SSHTimeout(SSHError):
    """A command, or waiting for the server, took longer than allowed."""


class CommandFailed(HarnessError):
    """``check=True`` and the command exited non-zero.  Not an InfraError."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        how = f"signal {result.signal}" if result.signal else f"exit {result.exit_status}"
        super().__init__(f"{result.cmd!r} as {result.user} failed ({how}){detail}")


# =====================================================================================
# Results


@dataclass(frozen=True)
class CommandResult:
    cmd: str
    user: str
    exit_status: int  # 128 + n when killed by signal n (as a shell says); -1 if unknown
    stdout: str
    stderr: str
    duration: float
    stdout_bytes: bytes = field(default=b"", repr=False)
    signal: str | None = None  # "SEGV"... when the server sent exit-signal

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


# =====================================================================================
# paramiko plumbing


def _channel_request(chan: paramiko.Channel, m: Message) -> None:
    """paramiko ignores "exit-signal"; record it like a shell would (128 + n)."""
    start = m.packet.tell()
    key = m.get_text()
    if key == "exit-signal":
        want_reply = m.get_boolean()
        name = m.get_text()
        setattr(chan, "harness_signal", name)  # noqa: B010 - paramiko's object
        chan.exit_status = 128 + SIGNALS[name] if name in SIGNALS else -1
        chan.status_event.set()
        if want_reply:
            reply = Message()
            reply.add_byte(paramiko.common.cMSG_CHANNEL_SUCCESS)
            reply.add_int(chan.remote_chanid)
            chan.transport._send_user_message(reply)  # type: ignore[union-attr]
        return
    m.packet.seek(start)
    paramiko.Channel._handle_request(chan, m)  # type: ignore[attr-defined]


class _Transport(paramiko.Transport):
    _channel_handler_table = {
        **paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]
        paramiko.common.MSG_CHANNEL_REQUEST: _channel_request,
    }


def _send_signal(chan: paramiko.Channel, name: str) -> None:
    """Best effort RFC 4254 "signal" request (dropbear >= 2020.79 honours it)."""
    try:
        m = Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        chan.transport._send_user_message(m)  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - the channel is being abandoned anyway
        pass


def load_key(path: Path | str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(Path(path))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise SSHAuthError(f"cannot load ssh key {path}: {exc}") from None


def _host_key(line: str) -> paramiko.PKey:
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"not a public key line: {line!r}")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


# =====================================================================================
# The guest


@dataclass
class Guest:
    """An SSH server (the VM's forwarded port) and one key per user."""

    host: str = "127.0.0.1"
    port: int = 22
    keys: Mapping[str, Path] = field(default_factory=dict)
    host_key: str | None = None  # "ssh-ed25519 AAAA...": checked when given
    connect_timeout: float = CONNECT_TIMEOUT
    alive: Callable[[], bool] | None = field(default=None, repr=False)  # is the VM running?
    name: str = "guest"
    _transports: dict[str, paramiko.Transport] = field(default_factory=dict, init=False, repr=False)
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

    def _connect(self, user: str, timeout: float) -> paramiko.Transport:
        """One connection attempt within ``timeout`` seconds."""
        timeout = max(0.1, min(timeout, self.connect_timeout))
        pkey = self._key(user)
        self._check_alive()
        end = time.monotonic() + timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            # QEMU listens on the forwarded port as long as it runs: once the guest
            # was reachable, a refused or reset connection means QEMU is going (wait
            # to see it go: SSHGuestDown); before that, QEMU may still be starting
            self._check_alive(wait=1.0 if self._reached else 0.0)
            why = ("connection refused" if isinstance(exc, ConnectionRefusedError)
                   else "TCP connect timed out" if isinstance(exc, TimeoutError) else str(exc))
            raise SSHConnectError(f"{self.where(user)}: {why}") from None
        # Without TCP_NODELAY every command waits ~40 ms: paramiko writes a
        # channel request as several small segments and Nagle holds the next
        # one until the guest's delayed ACK (HZ/25) arrives.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = _Transport(sock)
        left = max(0.1, end - time.monotonic())
        transport.banner_timeout = left
        transport.auth_timeout = left
        transport.handshake_timeout = left
        try:
            try:
                transport.start_client(timeout=left)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._check_alive()
                why = str(exc) or type(exc).__name__
                raise SSHConnectError(f"{self.where(user)}: no SSH session: {why}") from None
            try:
                got = transport.get_remote_server_key()  # start_client's timeout does not raise
            except paramiko.SSHException:
                raise SSHConnectError(
                    f"{self.where(user)}: no SSH handshake within {timeout:.1f}s"
                ) from None
            if self.host_key is not None:
                expected = _host_key(self.host_key)
                if got != expected:
                    raise SSHHostKeyError(
                        f"{self.where(user)}: unexpected host key {got.get_name()} "
                        f"{got.fingerprint} (expected {expected.fingerprint}): another VM on this port?"
                    )
            try:
                transport.auth_publickey(user, pkey)
            except paramiko.AuthenticationException as exc:
                raise SSHAuthError(f"{self.where(user)}: key {self.keys[user]} rejected: {exc}") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._check_alive()
                raise SSHDisconnected(f"{self.where(user)}: dropped during authentication: {exc}") from None
            if not transport.is_authenticated():
                raise SSHAuthError(f"{self.where(user)}: authentication did not complete")
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(15)
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
                t.close()
                del self._transports[user]
            t = self._connect(user, self.connect_timeout if timeout is None else timeout)
            self._transports[user] = t
            return t

    def wait_ready(self, deadline: float, poll: float = 0.3, user: str = "root") -> float:
        """Poll until ``user`` can log in; returns the seconds it took.

        ``deadline`` is a :func:`time.monotonic` value.  Connection problems
        are retried every ``poll`` seconds; a rejected key or a wrong host key
        is not (it will not get better).  Raises :class:`SSHTimeout` with the
        last problem seen, :class:`SSHGuestDown` as soon as the VM is gone.
        """
        start = time.monotonic()
        last: Exception | None = None
        attempts = 0
        while True:
            attempts += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise SSHTimeout(
                    f"{self.where(user)}: no SSH login after {time.monotonic() - start:.1f}s "
                    f"({attempts - 1} attempts; last: {last})"
                )
            try:
                self.connection(user, timeout=left)
                log.debug("%s: ssh ready after %d attempt(s)", self.where(user), attempts)
                return time.monotonic() - start
            except (SSHHostKeyError, SSHAuthError, SSHGuestDown):
                raise
            except SSHError as exc:
                last = exc
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))

    def close(self) -> None:
        with self._lock:
            for t in self._transports.values():
                t.close()
            self._transports.clear()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------

    def _drop(self, user: str) -> None:
        with self._lock:
            t = self._transports.pop(user, None)
        if t is not None:
            t.close()

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
            self._drop(user)
            if attempt == 2 or not dead:
                self._check_alive()
                raise SSHDisconnected(f"{self.where(user)}: {problem}")
            log.info("%s: %s; retrying on a new connection", self.where(user), problem)
        raise AssertionError("unreachable")  # pragma: no cover

    def run(
        self,
        cmd: str | Sequence[str],
        user: str = "root",
        timeout: float = 60,
        check: bool = False,
        input: str | bytes | None = None,
    ) -> CommandResult:
        """Run ``cmd`` as ``user``; the whole call (connecting included) is bounded by ``timeout``."""
        cmdline = command_line(cmd)
        data = input.encode() if isinstance(input, str) else (input or b"")
        start = time.monotonic()
        deadline = start + timeout
        log.info("ssh %s: %s", self.where(user), cmdline if len(cmdline) < 300 else cmdline[:300] + "...")
        chan = self._start(user, cmdline, deadline, timeout)
        try:
            out, err = self._pump(chan, data, deadline, cmdline, user, timeout)
            status = chan.exit_status
            sig: str | None = getattr(chan, "harness_signal", None)
        finally:
            chan.close()
        text = out.decode(errors="replace")
        result = CommandResult(cmdline, user, status, text, err.decode(errors="replace"),
                               time.monotonic() - start, out, sig)
        log.debug("ssh %s: exit %s in %.2fs", self.where(user), status, result.duration)
        if check:
            result.check()
        return result

    def _pump(self, chan: paramiko.Channel, data: bytes, deadline: float, cmdline: str, user: str,
              timeout: float) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        err: list[bytes] = []
        pending = memoryview(data)
        if not pending:
            chan.shutdown_write()
        transport = chan.get_transport()
        while True:
            while chan.recv_ready():
                out.append(chan.recv(_CHUNK))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(_CHUNK))
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
                break
            alive = transport is not None and transport.is_active()
            if drained and chan.closed and alive:
                break  # closed without an exit status: reported as -1
            if not alive:
                self._check_alive()
                raise SSHDisconnected(
                    f"{self.where(user)}: connection dropped while running {cmdline!r}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                self._abandon(chan)
                raise SSHTimeout(f"{self.where(user)}: {cmdline!r} timed out after {timeout:g}s")
            wait = min(left, 0.05 if pending else 0.5)
            select.select([chan], [], [], wait)
        return b"".join(out), b"".join(err)

    @staticmethod
    def _abandon(chan: paramiko.Channel, grace: float = 2.0) -> None:
        """Kill a timed-out command and let the server close the channel first.

        Closing it from this side while the command still runs has been seen
        to make dropbear 2022.83 end the whole session.
        """
        _send_signal(chan, "KILL")
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


def wait_for_ssh(port: int, key: Path, deadline: float, poll: float = 0.3, *,
                 host: str = "127.0.0.1", user: str = "root", host_key: str | None = None,
                 alive: Callable[[], bool] | None = None) -> float:
    """Poll until ``user`` logs in with ``key``; returns the seconds it took."""
    with Guest(host, port, {user: key}, host_key=host_key, alive=alive) as g:
        return g.wait_ready(deadline, poll, user)


