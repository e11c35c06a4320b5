"""QEMU's monitor protocol (QMP): QEMU connects to a socket the harness listens on.

The harness creates the listening unix socket before it starts QEMU and
passes ``-chardev socket,path=...`` (QEMU as the client), so the connection
arrives as QEMU starts: waiting for it is waiting for a signal, not polling
for a socket file.  Only what the harness needs is here: the capabilities
handshake, commands, waiting for the guest to run (the end of an incoming
migration) and saving the guest to a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessTimeout, InfraError


class QMPError(InfraError):
    """QEMU refused a command, or its monitor went away."""


class QMPListener:
    """A unix socket in a short private directory that one QEMU connects to."""

    def __init__(self) -> None:
        # a unix socket path must be short: not in the cache, which may be deep
        self._dir = Path(tempfile.mkdtemp(prefix="harness-qmp-"))
        self.path = self._dir / "qmp"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(1)

    def accept(self, deadline: float, gone: Callable[[], bool]) -> QMP:
        """The QMP session of the QEMU that connects; :class:`QMPError` if it exits first."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessTimeout(f"QEMU did not connect its monitor to {self.path}")
            ready, _, _ = select.select([self._sock], [], [], min(left, 0.2))
            if ready:
                conn, _ = self._sock.accept()
                return QMP(conn, str(self.path), deadline)
            if gone():
                raise QMPError("QEMU exited before it connected its monitor")

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class QMP:
    """One QMP session (capabilities negotiated)."""

    def __init__(self, sock: socket.socket, where: str, deadline: float) -> None:
        self._sock = sock
        self.where = where
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        greeting = self._read(deadline)
        if "QMP" not in greeting:
            self.close()
            raise QMPError(f"QEMU monitor {where}: unexpected greeting {greeting!r}")
        self.command("qmp_capabilities", deadline=deadline)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessTimeout(f"QEMU monitor {self.where}: no answer in time")
            ready, _, _ = select.select([self._sock], [], [], left)
            if not ready:
                continue
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise QMPError(f"QEMU monitor {self.where}: {exc}") from None
            if not chunk:
                raise QMPError(f"QEMU monitor {self.where}: QEMU closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, name: str, *, deadline: float | None = None, **arguments: Any) -> Any:
        """Run ``name``; its ``return`` value, or :class:`QMPError` with QEMU's message."""
        deadline = deadline if deadline is not None else time.monotonic() + 30.0
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            raise QMPError(f"QEMU monitor {self.where}: {name}: {exc}") from None
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                desc = reply["error"].get("desc", reply["error"])
                raise QMPError(f"QEMU monitor: {name}: {desc}")
            return reply.get("return")

    def _next_event(self, deadline: float) -> dict[str, Any]:
        """The oldest event not yet taken (read from QEMU if none is queued)."""
        while not self.events:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
        return self.events.pop(0)

    def wait_running(self, deadline: float) -> None:
        """Return once the guest runs: at once if it does, else at QEMU's RESUME event
        (an incoming migration completes, then QEMU starts the guest)."""
        status = self.command("query-status", deadline=deadline)
        if isinstance(status, dict) and status.get("status") == "running":
            return
        while self._next_event(deadline).get("event") != "RESUME":
            pass

    def save(self, dest: Path, deadline: float) -> None:
        """Migrate the running guest into ``dest`` (written to ``dest.part``, renamed when
        complete); the end is QEMU's MIGRATION event, not a poll."""
        partial = dest.with_name(dest.name + ".part")
        try:
            self.command("migrate-set-capabilities", deadline=deadline,
                         capabilities=[{"capability": "events", "state": True}])
            # no "stop" first: a guest saved while running runs again when resumed
            # (QEMU's last pass copies it stopped, so the image is consistent)
            self.command("migrate", deadline=deadline, uri=f"exec:cat > {shlex.quote(str(partial))}")
            while True:
                event = self._next_event(deadline)
                status = event.get("data", {}).get("status") if event.get("event") == "MIGRATION" else None
                if status == "completed":
                    break
                if status in ("failed", "cancelled"):
                    raise QMPError(f"saving the guest state to {partial}: migration {status}")
            os.replace(partial, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
