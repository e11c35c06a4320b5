"""harness.machine.ssh against an in-process paramiko server on 127.0.0.1 (no VM needed)."""

from __future__ import annotations

import re
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from harness.errors import InfraError
from harness.machine import ssh

USERS = ("root", "alice")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One RSA key per user plus a host key, as private key files."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in (*USERS, "mallory", "host", "otherhost"):
        path = d / f"{name}_rsa"
        paramiko.RSAKey.generate(2048).write_private_key_file(str(path))
        out[name] = path
    return out


def _public(path: Path) -> str:
    key = paramiko.PKey.from_path(path)
    return f"{key.get_name()} {key.get_base64()}"


@dataclass
class FakeGuest:
    """A tiny SSH server whose exec commands are a few Python handlers."""

    keys: dict[str, Path]
    host_key_name: str = "host"
    speak: bool = True  # False: accept TCP and say nothing (a guest that hangs)
    files: dict[str, bytes] = field(default_factory=dict)
    commands: list[tuple[str, str]] = field(default_factory=list)  # (user, command)
    signals: list[str] = field(default_factory=list)
    killed: threading.Event = field(default_factory=threading.Event)
    shells: int = 0
    connections: int = 0
    port: int = 0
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _transports: list[paramiko.Transport] = field(default_factory=list)

    def start(self, port: int = 0) -> FakeGuest:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for t in self._transports:
            t.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            if not self.speak:
                continue  # keep the socket open, never send a banner
            t = paramiko.Transport(conn)
            t.add_server_key(paramiko.PKey.from_path(self.keys[self.host_key_name]))
            self._transports.append(t)
            try:
                t.start_server(server=_Server(self, t))
            except (paramiko.SSHException, EOFError, OSError):
                continue  # the client gave up during the handshake (wrong host key...)
            threading.Thread(target=self._channels, args=(t,), daemon=True).start()

    def _channels(self, t: paramiko.Transport) -> None:
        while t.is_active() and not self._stop.is_set():
            chan = t.accept(0.2)
            if chan is None:
                continue

    def exec(self, chan: paramiko.Channel, user: str, command: str, transport: paramiko.Transport) -> None:
        """An exec request: a shell session, or one command."""
        try:
            if command == "exec /bin/sh":
                self.shells += 1
                self._shell(chan, user, transport)
                return
            status = self.run(chan, user, command, transport)
            if status is not None:
                chan.send_exit_status(status)
                chan.shutdown_write()
                chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def _shell(self, chan: paramiko.Channel, user: str, transport: paramiko.Transport) -> None:
        """The harness's shell protocol (harness/machine/shell.py), one line per command."""
        buf = b""
        while not self._stop.is_set():
            while b"\n" not in buf:
                data = chan.recv(65536)
                if not data:
                    return
                buf += data
            raw, _, buf = buf.partition(b"\n")
            line = raw.decode()
            hello = re.fullmatch(r"echo (\S+) \$\$", line)
            if hello:
                chan.sendall(f"{hello.group(1)} 4242\n".encode())
                continue
            m = re.fullmatch(r"sh -c (.*) </dev/null; printf '\\n(\S+) %d\\n' \$\?; "
                             r"printf '\\n\S+\\n' >&2", line)
            assert m, f"not the shell protocol: {line!r}"
            status = self.run(chan, user, shlex.split(m.group(1))[0], transport, in_shell=True)
            if status is None:
                return
            chan.sendall(f"\n{m.group(2)} {status}\n".encode())
            chan.sendall_stderr(f"\n{m.group(2)}\n".encode())

    def run(self, chan: paramiko.Channel, user: str, command: str, transport: paramiko.Transport,
            in_shell: bool = False) -> int | None:
        """Run one command; its exit status (None: the handler ended the channel itself)."""
        self.commands.append((user, command))
        argv = shlex.split(command)
        status = 0
        if command.startswith("cat > "):
            path = argv[2]
            data = _read_all(chan)
            self.files[path] = data
        elif argv[0] == "cat" and argv[1:2] == ["--"]:
            path = argv[2]
            if path in self.files:
                chan.sendall(self.files[path])
            else:
                chan.sendall_stderr(f"cat: {path}: No such file or directory\n".encode())
                status = 1
        elif argv[0] == "cat":
            chan.sendall(_read_all(chan))
        elif argv[0] == "echo":
            chan.sendall((" ".join(argv[1:]) + "\n").encode())
        elif argv[0] == "raw":
            chan.sendall(command.encode())
        elif argv[0] == "whoami":
            chan.sendall(f"{user}\n".encode())
        elif argv[0] == "fail":
            chan.sendall(b"partial output\n")
            chan.sendall_stderr(b"something went wrong\n")
            status = int(argv[1])
        elif argv[0] == "sleep":
            end = time.monotonic() + float(argv[1])
            while time.monotonic() < end and not chan.closed and not self._stop.is_set():
                if self.signals or self.killed.is_set():
                    status = 137
                    break
                time.sleep(0.02)
        elif command.startswith("for d in /proc/[0-9]*"):  # the shell's kill-the-child script
            self.killed.set()
        elif argv[0] == "drop":
            chan.sendall(b"half of the out")
            time.sleep(0.2)
            transport.close()
            return None
        elif argv[0] == "segv":
            m = Message()
            m.add_byte(cMSG_CHANNEL_REQUEST)
            m.add_int(chan.remote_chanid)
            m.add_string("exit-signal")
            m.add_boolean(False)
            m.add_string("SEGV")
            m.add_boolean(False)
            m.add_string("")
            m.add_string("")
            transport._send_user_message(m)  # type: ignore[attr-defined]
            chan.shutdown_write()
            chan.close()
            return None
        elif argv[0] == "big":
            chan.sendall(bytes(range(256)) * (int(argv[1]) // 256))
        elif argv[0] == "binary":
            chan.sendall(bytes(range(256)))
            chan.sendall_stderr(bytes(range(255, -1, -1)))
        else:
            chan.sendall_stderr(f"sh: {argv[0]}: not found\n".encode())
            status = 127
        return status


def _read_all(chan: paramiko.Channel) -> bytes:
    out: list[bytes] = []
    while True:
        data = chan.recv(65536)
        if not data:
            return b"".join(out)
        out.append(data)


class _Server(paramiko.ServerInterface):
    def __init__(self, guest: FakeGuest, transport: paramiko.Transport) -> None:
        self.guest = guest
        self.transport = transport
        self.user = ""

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        path = self.guest.keys.get(username)
        if username in USERS and path is not None and paramiko.PKey.from_path(path) == key:
            self.user = username
            return int(paramiko.common.AUTH_SUCCESSFUL)
        return int(paramiko.common.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.common.OPEN_SUCCEEDED)
        return int(paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        replied = threading.Event()
        channel.replied = replied  # type: ignore[attr-defined]

        def run() -> None:
            replied.wait(5)  # a channel closed before the exec reply looks refused to the client
            self.guest.exec(channel, self.user, command.decode(), self.transport)

        threading.Thread(target=run, daemon=True).start()
        return True


# paramiko's server ignores "signal" requests; record them.
_orig_handle_request = paramiko.Channel._handle_request  # type: ignore[attr-defined]


@pytest.fixture
def server(keys: dict[str, Path]) -> Iterator[FakeGuest]:
    guest = FakeGuest(keys).start()

    def handle(chan: paramiko.Channel, m: Message) -> None:
        pos = m.packet.tell()
        if m.get_text() == "signal":
            m.get_boolean()
            guest.signals.append(m.get_text())
            return
        m.packet.seek(pos)
        _orig_handle_request(chan, m)
        replied = getattr(chan, "replied", None)
        if replied is not None:
            replied.set()

    table = dict(paramiko.Transport._channel_handler_table)  # type: ignore[attr-defined]
    old = paramiko.Transport._channel_handler_table  # type: ignore[attr-defined]
    table[paramiko.common.MSG_CHANNEL_REQUEST] = handle
    paramiko.Transport._channel_handler_table = table  # type: ignore[attr-defined]
    try:
        yield guest
    finally:
        paramiko.Transport._channel_handler_table = old  # type: ignore[attr-defined]
        guest.stop()


@pytest.fixture
def guest(server: FakeGuest, keys: dict[str, Path]) -> Iterator[ssh.Guest]:
    g = ssh.Guest("127.0.0.1", server.port, {u: keys[u] for u in USERS},
                  host_key=_public(keys["host"]))
    yield g
    g.close()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- commands -----------------------------------------------------------------------


def test_exit_status_and_output_pass_through(guest: ssh.Guest) -> None:
    r = guest.run("fail 3")
    assert (r.exit_status, r.ok) == (3, False)
    assert (r.stdout, r.stderr) == ("partial output\n", "something went wrong\n")
    assert r.cmd == "fail 3" and r.user == "root" and r.duration >= 0
    ok = guest.run("echo hello")
    assert ok.ok and ok.stdout == "hello\n"


def test_check_raises_command_failed_which_is_not_infra(guest: ssh.Guest) -> None:
    with pytest.raises(ssh.CommandFailed) as info:
        guest.run("fail 2", check=True)
    assert not isinstance(info.value, InfraError)
    assert info.value.result.exit_status == 2
    assert "something went wrong" in str(info.value)
    assert guest.run("echo fine", check=True).stdout == "fine\n"


def test_list_commands_are_shell_quoted(guest: ssh.Guest) -> None:
    args = ["raw", "a b", "$(reboot)", "; rm -rf /", "it's", ""]
    r = guest.run(args)
    assert r.stdout == shlex.join(args)
    assert shlex.split(r.stdout) == args
    assert r.cmd == shlex.join(args)


def test_users_log_in_with_their_own_key_and_connections_are_reused(
    guest: ssh.Guest, server: FakeGuest
) -> None:
    assert guest.run("whoami").stdout == "root\n"
    assert guest.run("whoami", user="alice").stdout == "alice\n"
    assert guest.run(["whoami"], user="alice").stdout == "alice\n"
    assert server.connections == 2  # one per user, cached
    assert server.shells == 2  # one shell per user, reused
    assert [u for u, _ in server.commands] == ["root", "alice", "alice"]


def test_exit_signal_is_reported_like_a_shell(guest: ssh.Guest) -> None:
    r = guest.run("segv", fresh=True)
    assert r.signal == "SEGV"
    assert r.exit_status == 128 + 11
    with pytest.raises(ssh.CommandFailed, match="signal SEGV"):
        r.check()


def test_input_and_large_output(guest: ssh.Guest) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB: more than one SSH window each way
    r = guest.run("cat", input=data, timeout=60)
    assert r.stdout_bytes == data
    big = guest.run("big 3000000")
    assert len(big.stdout_bytes) == 3000000 // 256 * 256


# --- files --------------------------------------------------------------------------


def test_put_get_round_trip_binary(guest: ssh.Guest, server: FakeGuest, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 1000 + b"\r\n\x00\x1b[0m\x03\x04"
    guest.put(blob, "/tmp/blob bin", mode=0o755)
    _, cmd = server.commands[-1]
    assert cmd == "cat > '/tmp/blob bin' && chmod 755 '/tmp/blob bin'"
    assert server.files["/tmp/blob bin"] == blob
    assert guest.get("/tmp/blob bin") == blob

    local = tmp_path / "f"
    local.write_bytes(b"\x00" * 70000)
    guest.put(local, "/tmp/f", user="alice")
    assert server.commands[-1][0] == "alice"
    assert guest.get("/tmp/f", user="alice") == b"\x00" * 70000


def test_get_missing_file_is_a_command_failure(guest: ssh.Guest) -> None:
    with pytest.raises(ssh.CommandFailed, match="No such file"):
        guest.get("/nope")


# --- infrastructure failures ----------------------------------------------------------


def test_wrong_key_is_an_auth_error(server: FakeGuest, keys: dict[str, Path]) -> None:
    g = ssh.Guest("127.0.0.1", server.port, {"root": keys["mallory"]})
    with pytest.raises(ssh.SSHAuthError) as info:
        g.run("echo hi")
    assert isinstance(info.value, InfraError)
    assert not server.commands


def test_user_without_key_is_an_auth_error(guest: ssh.Guest) -> None:
    with pytest.raises(ssh.SSHAuthError, match="no ssh key for user 'bob'"):
        guest.run("whoami", user="bob")


def test_unexpected_host_key_is_refused(server: FakeGuest, keys: dict[str, Path]) -> None:
    g = ssh.Guest("127.0.0.1", server.port, {"root": keys["root"]}, host_key=_public(keys["otherhost"]))
    with pytest.raises(ssh.SSHHostKeyError, match="another VM"):
        g.run("echo hi")
    assert not server.commands


def test_refused_connection(keys: dict[str, Path]) -> None:
    g = ssh.Guest("127.0.0.1", _dead_port(), {"root": keys["root"]})
    with pytest.raises(ssh.SSHConnectError, match="refused") as info:
        g.run("echo hi")
    assert isinstance(info.value, InfraError)


def test_dead_vm_is_reported_as_such(keys: dict[str, Path]) -> None:
    g = ssh.Guest("127.0.0.1", _dead_port(), {"root": keys["root"]}, alive=lambda: False)
    with pytest.raises(ssh.SSHGuestDown):
        g.run("echo hi")
    with pytest.raises(ssh.SSHGuestDown):
        g.wait_ready(time.monotonic() + 5)


def test_server_closing_mid_command_then_reconnect(guest: ssh.Guest, server: FakeGuest) -> None:
    guest.run("echo warm")
    with pytest.raises(ssh.SSHDisconnected) as info:
        guest.run("drop", timeout=10)
    assert isinstance(info.value, InfraError)
    # the next command gets a fresh connection
    assert guest.run("echo again").stdout == "again\n"
    assert server.connections == 2


def test_command_timeout_kills_the_command_and_keeps_the_shell(guest: ssh.Guest,
                                                               server: FakeGuest) -> None:
    with pytest.raises(ssh.SSHTimeout, match="timed out after 1s") as info:
        guest.run("sleep 30", timeout=1)
    assert isinstance(info.value, InfraError)
    # the shell's child was killed (a script on an exec channel), the shell drained and kept
    assert server.killed.is_set()
    assert "4242" in server.commands[-1][1]
    assert guest.run("echo after").stdout == "after\n"
    assert server.shells == 1


def test_exec_command_timeout_sends_kill(guest: ssh.Guest, server: FakeGuest) -> None:
    with pytest.raises(ssh.SSHTimeout, match="timed out after 1s"):
        guest.run("sleep 30", timeout=1, fresh=True)
    assert server.signals == ["KILL"]
    assert guest.run("echo after", fresh=True).stdout == "after\n"


def test_binary_output_is_passed_through_unchanged(guest: ssh.Guest) -> None:
    for fresh in (False, True):
        r = guest.run("binary", fresh=fresh)
        assert r.stdout_bytes == bytes(range(256))
        assert r.stderr_bytes == bytes(range(255, -1, -1))


def test_stream_hands_output_to_the_sinks_as_it_comes(guest: ssh.Guest) -> None:
    chunks: list[bytes] = []
    errs: list[bytes] = []
    status, sig = guest.stream("big 3000000", chunks.append, errs.append)
    assert (status, sig) == (0, None)
    assert len(chunks) > 1  # in pieces, not one buffer
    assert b"".join(chunks) == bytes(range(256)) * (3000000 // 256)


def test_silent_server_times_out(keys: dict[str, Path]) -> None:
    silent = FakeGuest(keys, speak=False).start()
    try:
        g = ssh.Guest("127.0.0.1", silent.port, {"root": keys["root"]})
        with pytest.raises(ssh.SSHConnectError, match="no SSH (session|handshake)"):
            g.run("echo hi", timeout=1.5)
        with pytest.raises(ssh.SSHTimeout):
            g.wait_ready(time.monotonic() + 1.5, poll=0.1)
    finally:
        silent.stop()


# --- readiness ----------------------------------------------------------------------------


def test_wait_ready_retries_until_the_server_listens(keys: dict[str, Path]) -> None:
    port = _dead_port()
    late = FakeGuest(keys)
    timer = threading.Timer(0.5, late.start, kwargs={"port": port})
    timer.start()
    try:
        g = ssh.Guest("127.0.0.1", port, {"root": keys["root"]}, host_key=_public(keys["host"]))
        g.wait_ready(time.monotonic() + 15, poll=0.1)
        assert late.connections == 1
        assert g.run("whoami").stdout == "root\n"
        g.close()
    finally:
        timer.join()
        late.stop()


def test_wait_ready_gives_up_at_the_deadline(keys: dict[str, Path]) -> None:
    g = ssh.Guest("127.0.0.1", _dead_port(), {"root": keys["root"]})
    with pytest.raises(ssh.SSHTimeout, match="no SSH login after .*refused"):
        g.wait_ready(time.monotonic() + 1.0, poll=0.1)


def test_wait_ready_does_not_retry_a_rejected_key(server: FakeGuest, keys: dict[str, Path]) -> None:
    g = ssh.Guest("127.0.0.1", server.port, {"root": keys["mallory"]})
    with pytest.raises(ssh.SSHAuthError):
        g.wait_ready(time.monotonic() + 20)
    assert server.connections == 1


def test_command_line() -> None:
    assert ssh.command_line("echo $HOME") == "echo $HOME"
    assert ssh.command_line(["echo", "$HOME"]) == "echo '$HOME'"
    with pytest.raises(ValueError):
        ssh.command_line([])


def test_connections_send_without_nagle_delay(guest: ssh.Guest) -> None:
    """Nagle would hold each command's last request segment until the guest's
    delayed ACK (about 40 ms on 2.6.20): every command would cost that much."""
    sock = guest.connection("root").sock
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_closing_a_guest_whose_connection_died_under_it_does_not_raise(guest: ssh.Guest) -> None:
    """The guest rebooted or QEMU died: the socket is gone before paramiko noticed.  Closing the
    shell and the connection (as VM.stop does) must not raise (paramiko raises EOFError)."""
    guest.run("echo warm")
    transport = guest._transports["root"]
    transport.sock.shutdown(socket.SHUT_RDWR)
    guest.close()
    assert not guest._transports and not guest._shells
