"""Progress for long steps: a live line on a terminal, plain lines in CI logs.

Use :func:`step` around anything that takes more than a second::

    with progress.step("build default") as s:
        s.update("CC kernel/rcfs.o")

On a terminal the line is redrawn with the elapsed time; elsewhere (CI, a
pipe) each update is printed at most every few seconds so logs stay short.
All output goes to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO


def _is_tty(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("CI") is None and os.environ.get("TERM") != "dumb"


QUIET_FOR = 1.0  # steps shorter than this print nothing at all


@dataclass
class Step:
    title: str
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    interval: float = 10.0
    start: float = field(default_factory=time.monotonic)
    _detail: str = ""
    _shown: bool = False
    _last_plain: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, detail: str) -> None:
        with self._lock:
            self._detail = detail

    def _tick(self, tty: bool) -> None:
        with self._lock:
            if self.elapsed < QUIET_FOR:
                return
            if tty:
                line = f"\r\033[K==> {self.title} [{self.elapsed:5.1f}s] {self._detail}"
                self.stream.write(line[:108])
                self.stream.flush()
            elif not self._shown:
                print(f"==> {self.title}", file=self.stream, flush=True)
                self._last_plain = time.monotonic()
            elif time.monotonic() - self._last_plain >= self.interval and self._detail:
                self._last_plain = time.monotonic()
                print(f"[{self.elapsed:6.1f}s] {self.title}: ... {self._detail}",
                      file=self.stream, flush=True)
            self._shown = True

    def _ticker(self, tty: bool) -> None:
        while not self._stop.wait(0.2 if tty else 0.5):
            self._tick(tty)


@contextlib.contextmanager
def step(title: str, stream: TextIO | None = None) -> Iterator[Step]:
    """Show ``title`` with elapsed time while the block runs (silent if it is quick)."""
    s = Step(title, stream or sys.stderr)
    tty = _is_tty(s.stream)
    ticker = threading.Thread(target=s._ticker, args=(tty,), daemon=True)
    ticker.start()
    ok = False
    try:
        yield s
        ok = True
    finally:
        s._stop.set()
        ticker.join()
        if s._shown:
            if tty:
                s.stream.write("\r\033[K")
            verdict = "done" if ok else "FAILED"
            print(f"==> {title}: {verdict} in {s.elapsed:.1f}s", file=s.stream, flush=True)
