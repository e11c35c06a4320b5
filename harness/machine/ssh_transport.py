"""One authenticated SSH connection to a guest (paramiko), and the SSH error kinds.

A connection attempt has two separate limits: the TCP connect (short:
:data:`TCP_CONNECT_TIMEOUT`, a connect that does not get through at once is
given up and tried again) and the SSH handshake and authentication
(:data:`HANDSHAKE_TIMEOUT`); both are further capped by the caller's deadline.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from harness.errors import HarnessTimeout, InfraError

#: seconds a TCP connect may take (loopback to QEMU's forward: it answers at once or not at all)
TCP_CONNECT_TIMEOUT = 2.0
#: seconds the SSH banner, key exchange and authentication may take
HANDSHAKE_TIMEOUT = 10.0

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
}


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


class SSHTimeout(SSHError, HarnessTimeout):
    """A command, or waiting for the server, took longer than allowed."""

    kind = "timeout"


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


def send_signal(chan: paramiko.Channel, name: str) -> None:
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


def parse_host_key(line: str) -> paramiko.PKey:
    """A public key from its ``ssh-ed25519 AAAA...`` line."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"not a public key line: {line!r}")
    return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))


def tcp_connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with Nagle off (``OSError`` when refused or timed out).

    Without TCP_NODELAY every command waits ~40 ms: paramiko writes a
    channel request as several small segments and Nagle holds the next one
    until the guest's delayed ACK (HZ/25) arrives.
    """
    sock = socket.create_connection((host, port), timeout=min(timeout, TCP_CONNECT_TIMEOUT))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def authenticate(sock: socket.socket, where: str, user: str, pkey: paramiko.PKey, key_path: object,
                 host_key: str | None, deadline: float) -> paramiko.Transport:
    """SSH handshake on ``sock``, host key check, public-key login of ``user``.

    Raises :class:`SSHConnectError` (no session), :class:`SSHHostKeyError`,
    :class:`SSHAuthError`, or :class:`SSHDisconnected` (dropped meanwhile).
    """
    left = max(0.1, min(deadline - time.monotonic(), HANDSHAKE_TIMEOUT))
    transport = _Transport(sock)
    transport.banner_timeout = left
    transport.auth_timeout = left
    transport.handshake_timeout = left
    try:
        try:
            transport.start_client(timeout=left)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHConnectError(f"{where}: no SSH session: {str(exc) or type(exc).__name__}") from None
        try:
            got = transport.get_remote_server_key()  # start_client's timeout does not raise
        except paramiko.SSHException:
            raise SSHConnectError(f"{where}: no SSH handshake within {left:.1f}s") from None
        if host_key is not None:
            expected = parse_host_key(host_key)
            if got != expected:
                raise SSHHostKeyError(
                    f"{where}: unexpected host key {got.get_name()} {got.fingerprint} "
                    f"(expected {expected.fingerprint}): another VM on this port?")
        try:
            transport.auth_publickey(user, pkey)
        except paramiko.AuthenticationException as exc:
            raise SSHAuthError(f"{where}: key {key_path} rejected: {exc}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHDisconnected(f"{where}: dropped during authentication: {exc}") from None
        if not transport.is_authenticated():
            raise SSHAuthError(f"{where}: authentication did not complete")
    except BaseException:
        transport.close()
        raise
    transport.set_keepalive(15)
    return transport
