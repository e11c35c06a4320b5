"""A long-lived shell per guest user: one SSH channel that runs command after command.

An SSH exec costs the guest a dropbear session (fork, channel set-up, a
shell) and the host several round trips; under TCG that is about 3.5 ms of a
5 ms ``true``.  Here one ``/bin/sh`` stays open on a channel and each command
is written to it as one line::

    sh -c 'CMD' </dev/null; printf '\\n<token> %d\\n' $?; printf '\\n<token>\\n' >&2

so the command runs exactly as an exec would run it (its own ``sh -c``
process, ``$$`` its own pid, no stdin), and the two streams end with a
marker that carries the exit status.  The token is random per shell: no
output can fake it.  Commands with input, and streamed output, still use
exec channels (:mod:`harness.machine.ssh`).
"""

from __future__ import annotations

import contextlib
import select
import shlex
import time
import uuid
from dataclasses import dataclass

import paramiko

_CHUNK = 65536


class ShellGone(Exception):
    """The shell's channel closed (or could not be used) before the command's marker came."""


class ShellTimeout(Exception):
    """The command did not finish by its deadline; the shell is still busy with it."""


@dataclass(frozen=True)
class ShellResult:
    status: int
    stdout: bytes
    stderr: bytes


class Shell:
    """One ``/bin/sh`` on one channel; not thread-safe (the caller holds a lock)."""

    def __init__(self, chan: paramiko.Channel, token: str, pid: int) -> None:
        self.chan = chan
        self.pid = pid  # the shell's pid in the guest: its child is the running command
        self._token = token.encode()
        self._out = bytearray()
        self._err = bytearray()

    @classmethod
    def open(cls, transport: paramiko.Transport, deadline: float) -> Shell:
        """Start ``/bin/sh`` on a new channel of ``transport`` and learn its pid."""
        try:
            chan = transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
            chan.exec_command("exec /bin/sh")
            token = f"HARNESS-{uuid.uuid4().hex}"
            chan.sendall(f"echo {token} $$\n".encode())
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ShellGone(f"cannot start a shell: {exc}") from None
        shell = cls(chan, token, 0)
        line = shell._read_until(shell._out, f"{token} ".encode(), b"\n", deadline)
        shell.pid = int(line)
        return shell

    @property
    def usable(self) -> bool:
        transport = self.chan.get_transport()
        return not self.chan.closed and transport is not None and transport.is_active()

    def run(self, cmdline: str, deadline: float) -> ShellResult:
        """Run ``cmdline`` (a shell command string); ShellTimeout at ``deadline``."""
        tok = self._token.decode()
        line = (f"sh -c {shlex.quote(cmdline)} </dev/null; "
                f"printf '\\n{tok} %d\\n' $?; printf '\\n{tok}\\n' >&2\n")
        try:
            self.chan.sendall(line.encode())
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ShellGone(f"cannot send the command: {exc}") from None
        return self.finish(deadline)

    def finish(self, deadline: float) -> ShellResult:
        """Read the running command's output up to its markers (after a timeout: to drain it)."""
        marker = b"\n" + self._token + b" "
        status_text = self._read_until(self._out, marker, b"\n", deadline)
        out = self._take(self._out)
        self._read_until(self._err, b"\n" + self._token, b"\n", deadline)
        err = self._take(self._err)
        return ShellResult(int(status_text), out, err)

    @staticmethod
    def _take(buf: bytearray) -> bytes:
        """What ``_read_until`` left before the marker (the marker itself was consumed)."""
        data = bytes(buf)
        buf.clear()
        return data

    def _read_until(self, buf: bytearray, marker: bytes, end: bytes, deadline: float) -> str:
        """Read both streams until ``buf`` holds ``marker`` ... ``end``; returns the text between.

        ``buf`` keeps what came before the marker; what came after ``end``
        (nothing, in this protocol) is dropped.
        """
        searched = 0  # no marker starts before this offset (large outputs: no rescans)
        while True:
            at = buf.find(marker, searched)
            if at >= 0:
                stop = buf.find(end, at + len(marker))
                if stop >= 0:
                    value = bytes(buf[at + len(marker):stop]).decode(errors="replace")
                    del buf[at:]
                    return value
            else:
                searched = max(0, len(buf) - len(marker))
            self._pump(deadline)

    def _pump(self, deadline: float) -> None:
        chan = self.chan
        got = False
        while chan.recv_ready():
            self._out += chan.recv(_CHUNK)
            got = True
        while chan.recv_stderr_ready():
            self._err += chan.recv_stderr(_CHUNK)
            got = True
        if got:
            return
        if chan.closed or chan.eof_received or chan.exit_status_ready():
            raise ShellGone("the shell ended")
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            raise ShellGone("the connection dropped")
        left = deadline - time.monotonic()
        if left <= 0:
            raise ShellTimeout()
        select.select([chan], [], [], min(left, 0.5))

    def close(self) -> None:
        """Close the channel; never raises (the guest may be gone: rebooted, crashed, killed)."""
        with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
            self.chan.close()


def kill_children_script(pid: int) -> str:
    """A guest shell script (builtins only) that SIGKILLs the children of ``pid``."""
    return ("for d in /proc/[0-9]*; do "
            "read -r p c s pp rest < \"$d/stat\" 2>/dev/null || continue; "
            f"[ \"$pp\" = {int(pid)} ] && kill -9 \"$p\" 2>/dev/null; done; true")
