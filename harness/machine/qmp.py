"""A small QMP (QEMU Machine Protocol) client: JSON commands over a unix socket.

Only what the harness needs: connect (QEMU creates the socket as it
starts), negotiate capabilities, run a command and return its ``return``
value.  Asynchronous events that arrive in between are skipped.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from harness.errors import StageError


class QMPError(StageError):
    """QEMU refused a command, or its monitor could not be reached."""


class QMP:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise QMPError(f"QEMU monitor {path}: cannot connect: {exc}") from None
                time.sleep(0.01)
        self._sock = sock
        self._file = sock.makefile("rw", encoding="utf-8")
        greeting = self._read()
        if "QMP" not in greeting:
            self.close()
            raise QMPError(f"QEMU monitor {path}: unexpected greeting {greeting!r}")
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as exc:
            raise QMPError(f"QEMU monitor {self.path}: {exc}") from None
        if not line:
            raise QMPError(f"QEMU monitor {self.path}: QEMU closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, name: str, **arguments: Any) -> Any:
        """Run ``name``; its ``return`` value, or :class:`QMPError` with QEMU's message."""
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        try:
            self._file.write(json.dumps(request) + "\n")
            self._file.flush()
        except OSError as exc:
            raise QMPError(f"QEMU monitor {self.path}: {name}: {exc}") from None
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                desc = reply["error"].get("desc", reply["error"])
                raise QMPError(f"QEMU monitor: {name}: {desc}")
            return reply.get("return")

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
