"""The live console of one QEMU process: a thread drains its pty into lines, milestones and reports."""

from __future__ import annotations

import codecs
import fcntl
import logging
import re
import select
import struct
import termios
import threading
import time
from collections.abc import Callable

from harness.machine.console import ConsoleEvent, Scanner, excerpt, normalize_line
from harness.proc import PtyChild

#: what :meth:`VM.sync_console <harness.machine.vm.VM.sync_console>` has the guest print; taken
#: in by the watcher (as the newest sync seen), never kept as a console line
SYNC_MARKER = "harness-console-sync"
_SYNC = re.compile(re.escape(SYNC_MARKER) + r" (\d+)")

log = logging.getLogger(__name__)


def _pending(fd: int) -> int:
    """Bytes waiting to be read on ``fd`` (0 when it cannot tell: closed)."""
    try:
        buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", buf)[0])


class ConsoleWatch:
    """Reads the serial console of ``child`` (a :class:`~harness.proc.PtyChild`) for its whole life.

    QEMU blocks when its console is not drained, so the thread never stops
    reading.  Everything read is also in the child's log file
    (``logfile_read``).  ``plock`` serialises access to the child with the
    code that signals and reaps it.
    """

    def __init__(self, child: PtyChild, name: str, plock: threading.RLock) -> None:
        self.child = child
        self.name = name
        self.t0 = time.monotonic()
        self.exited = threading.Event()
        self.cond = threading.Condition()
        self._plock = plock
        self._busy = False  # bytes read but not fed yet
        self._lines: list[str] = []
        self._partial = ""
        self._scanner = Scanner()
        self._milestones: dict[str, float] = {}
        self._events: list[tuple[str, int, str]] = []
        self._synced = 0  # the newest SYNC_MARKER number seen
        self._thread = threading.Thread(target=self._watch, name=f"{name}-console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _watch(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.child.child_fd
        try:
            while True:
                try:
                    ready, _, _ = select.select([fd], [], [], 0.25)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
                with self.cond:
                    self._busy = True
                try:
                    with self._plock:
                        try:
                            data = self.child.read(65536)
                        except (EOFError, OSError, ValueError):
                            break
                    self.feed(decoder.decode(data))
                finally:
                    with self.cond:
                        self._busy = False
                        self.cond.notify_all()
        except Exception:  # pragma: no cover - never let the console thread die silently
            log.exception("%s: console watcher failed", self.name)
        finally:
            self.feed(decoder.decode(b"", final=True), eof=True)
            self.exited.set()
            with self.cond:
                self.cond.notify_all()

    def feed(self, text: str, eof: bool = False) -> None:
        with self.cond:
            parts = (self._partial + text).split("\n")
            self._partial = parts.pop()
            if eof and self._partial:
                parts.append(self._partial)
                self._partial = ""
            now = time.monotonic() - self.t0
            for raw in parts:
                line = normalize_line(raw)
                sync = _SYNC.search(line)
                if sync is not None:
                    self._synced = max(self._synced, int(sync.group(1)))
                    continue
                self._lines.append(line)
                new, event = self._scanner.feed(line)
                for name in new:
                    self._milestones[name] = now
                    log.debug("%s: %.2fs %s", self.name, now, name)
                if event is not None:
                    self._events.append(event)
                    log.warning("%s: console: %s", self.name, line.strip())
            self.cond.notify_all()

    # -- waiting ------------------------------------------------------------------

    def wait_for(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait (woken by each console line) until ``done()`` or QEMU exits or the deadline."""
        with self.cond:
            while not done() and not self.exited.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
            return done()

    def sync(self, timeout: float = 1.0) -> bool:
        """Wait until everything QEMU has written to the console has been taken in.

        The kernel writes printk output to the serial port synchronously and
        QEMU passes each byte on to the pty at once, so when a guest command
        has returned, what it made the kernel print is already in the pty.
        False if the watcher did not catch up within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.exited.is_set():
                    return True
                if not self._busy and _pending(self.child.child_fd) == 0:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.01))

    def wait_synced(self, number: int, deadline: float) -> bool:
        """Wait until the guest's sync marker ``number`` has come through (see :data:`SYNC_MARKER`)."""
        return self.wait_for(lambda: self._synced >= number, deadline)

    # -- queries ------------------------------------------------------------------

    def mark(self) -> int:
        with self.cond:
            return len(self._lines)

    def since(self, mark: int = 0) -> str:
        with self.cond:
            tail = self._lines[mark:]
            partial = self._partial
        return "\n".join(tail + ([normalize_line(partial)] if partial else []))

    def tail(self, n: int = 40) -> str:
        with self.cond:
            lines = self._lines[-n:] + ([normalize_line(self._partial)] if self._partial else [])
        return "\n".join(lines[-n:])

    def recent_text(self, n: int = 20) -> str:
        with self.cond:
            return "\n".join(self._lines[-n:])

    def events_since(self, mark: int = 0) -> list[ConsoleEvent]:
        with self.cond:
            return [ConsoleEvent(k, line, n, excerpt(self._lines, n))
                    for k, n, line in self._events if n >= mark]

    def first_event(self, kinds: frozenset[str]) -> ConsoleEvent | None:
        with self.cond:
            for k, n, line in self._events:
                if k in kinds:
                    return ConsoleEvent(k, line, n, excerpt(self._lines, n))
        return None

    def milestones(self) -> dict[str, float]:
        with self.cond:
            return dict(self._milestones)

    def reached(self, name: str) -> bool:
        with self.cond:
            return name in self._milestones
