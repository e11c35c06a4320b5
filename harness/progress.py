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


@dataclass
class Step:
    title: str
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    interval: float = 10.0
    start: float = field(default_factory=time.monotonic)
    _detail: str = ""
    _last_plain: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, detail: str) -> None:
        with self._lock:
            self._detail = detail
            if not _is_tty(self.stream):
                now = time.monotonic()
                if now - self._last_plain >= self.interval:
                    self._last_plain = now
                    self._print_plain(f"... {detail}")

    def _print_plain(self, text: str) -> None:
        print(f"[{self.elapsed:6.1f}s] {self.title}: {text}", file=self.stream, flush=True)

    def _redraw(self) -> None:
        with self._lock:
            cols = 100
            line = f"\r\033[K==> {self.title} [{self.elapsed:5.1f}s] {self._detail}"
            self.stream.write(line[: cols + 8])
            self.stream.flush()

    def _ticker(self) -> None:
        while not self._stop.wait(0.2):
            self._redraw()


@contextlib.contextmanager
def step(title: str, stream: TextIO | None = None) -> Iterator[Step]:
    s = Step(title, stream or sys.stderr)
    tty = _is_tty(s.stream)
    ticker: threading.Thread | None = None
    if tty:
        ticker = threading.Thread(target=s._ticker, daemon=True)
        ticker.start()
    else:
        print(f"==> {title}", file=s.stream, flush=True)
        s._last_plain = time.monotonic()
    ok = False
    try:
        yield s
        ok = True
    finally:
        s._stop.set()
        if ticker is not None:
            ticker.join()
            s.stream.write("\r\033[K")
        verdict = "done" if ok else "FAILED"
        print(f"==> {title}: {verdict} in {s.elapsed:.1f}s", file=s.stream, flush=True)
