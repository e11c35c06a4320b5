"""harness.machine.qmp against a fake QEMU monitor (a thread on the harness's socket)."""

from __future__ import annotations

import json
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessTimeout
from harness.machine.qmp import QMPError, QMPListener

Reply = Callable[[dict[str, Any], socket.socket], None]


class FakeMonitor(threading.Thread):
    """Connects to the listener like QEMU's ``-chardev socket`` client and answers commands."""

    def __init__(self, path: Path, handlers: dict[str, Reply]) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.handlers = handlers
        self.received: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def _ok(self, request: dict[str, Any], sock: socket.socket) -> None:
        self.send({"return": {}})

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def run(self) -> None:
        self.sock.connect(str(self.path))
        self.send({"QMP": {"version": {}, "capabilities": []}})
        buf = b""
        while True:
            data = self.sock.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, _, buf = buf.partition(b"\n")
                request = json.loads(line)
                name = request["execute"]
                self.received.append(name)
                self.handlers.get(name, self._ok)(request, self.sock)


@pytest.fixture
def listener() -> Iterator[QMPListener]:
    lst = QMPListener()
    yield lst
    lst.close()


def _status(value: str) -> Reply:
    def reply(request: dict[str, Any], sock: socket.socket) -> None:
        sock.sendall(json.dumps({"return": {"status": value, "running": value == "running"}}).encode()
                     + b"\n")
    return reply


def test_wait_running_returns_at_the_resume_event_not_before(listener: QMPListener) -> None:
    resume_sent = threading.Event()
    fake = FakeMonitor(listener.path, {"query-status": _status("inmigrate")})
    fake.start()
    qmp = listener.accept(time.monotonic() + 10, lambda: False)

    def resume_later() -> None:
        time.sleep(0.3)
        fake.send({"event": "STOP", "data": {}})
        resume_sent.set()
        fake.send({"event": "RESUME", "data": {}})

    threading.Thread(target=resume_later, daemon=True).start()
    qmp.wait_running(time.monotonic() + 10)
    assert resume_sent.is_set()
    assert fake.received == ["qmp_capabilities", "query-status"]
    qmp.close()


def test_wait_running_returns_at_once_when_the_guest_runs(listener: QMPListener) -> None:
    fake = FakeMonitor(listener.path, {"query-status": _status("running")})
    fake.start()
    qmp = listener.accept(time.monotonic() + 10, lambda: False)
    qmp.wait_running(time.monotonic() + 10)  # no RESUME event will come: must not wait for one
    qmp.close()


def test_no_resume_by_the_deadline_is_a_timeout(listener: QMPListener) -> None:
    FakeMonitor(listener.path, {"query-status": _status("inmigrate")}).start()
    qmp = listener.accept(time.monotonic() + 10, lambda: False)
    with pytest.raises(HarnessTimeout):
        qmp.wait_running(time.monotonic() + 0.5)


def test_accept_gives_up_when_qemu_exits_first(listener: QMPListener) -> None:
    with pytest.raises(QMPError, match="exited before it connected"):
        listener.accept(time.monotonic() + 30, lambda: True)


def test_qemu_closing_the_monitor_is_a_qmp_error(listener: QMPListener) -> None:
    def close(request: dict[str, Any], sock: socket.socket) -> None:
        sock.shutdown(socket.SHUT_RDWR)

    FakeMonitor(listener.path, {"query-status": close}).start()
    qmp = listener.accept(time.monotonic() + 10, lambda: False)
    with pytest.raises(QMPError, match="closed the connection"):
        qmp.wait_running(time.monotonic() + 10)


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_save_ends_on_the_migration_event(listener: QMPListener, tmp_path: Path, outcome: str) -> None:
    dest = tmp_path / "state"
    fake: FakeMonitor

    def migrate(request: dict[str, Any], sock: socket.socket) -> None:
        uri = request["arguments"]["uri"]
        assert uri.startswith("exec:cat > ")
        partial = Path(shlex.split(uri.removeprefix("exec:cat > "))[0])
        partial.write_bytes(b"guest state")  # what QEMU's cat would write
        fake.send({"return": {}})
        fake.send({"event": "MIGRATION", "data": {"status": "active"}})
        fake.send({"event": "MIGRATION", "data": {"status": outcome}})

    fake = FakeMonitor(listener.path, {"migrate": migrate})
    fake.start()
    qmp = listener.accept(time.monotonic() + 10, lambda: False)
    if outcome == "completed":
        qmp.save(dest, time.monotonic() + 10)
        assert dest.read_bytes() == b"guest state"
    else:
        with pytest.raises(QMPError, match="migration failed"):
            qmp.save(dest, time.monotonic() + 10)
        assert not dest.exists()
    assert not dest.with_name("state.part").exists()
    assert fake.received == ["qmp_capabilities", "migrate-set-capabilities", "migrate"]
