"""No QEMU outlives the harness: every running VM is registered and killed at exit or on SIGTERM."""

from __future__ import annotations

import atexit
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from harness import cache, proc


class Killable(Protocol):
    def kill(self) -> None: ...


_live: set[Any] = set()
_lock = threading.RLock()  # re-entered by the SIGTERM handler
_installed = False
_prev_sigterm: Any = None


def add(vm: Killable) -> None:
    _install()
    with _lock:
        _live.add(vm)


def discard(vm: Killable) -> None:
    with _lock:
        _live.discard(vm)


def live() -> list[Any]:
    with _lock:
        return list(_live)


def reap_all() -> None:
    """Kill every registered VM at once (no SSH, no grace period)."""
    for vm in live():
        vm.kill()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    reap_all()
    prev = _prev_sigterm
    if callable(prev):
        prev(signum, frame)
    elif prev != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install() -> None:
    """atexit and SIGTERM handlers, once (SIGTERM only from the main thread, where it can be set)."""
    global _installed, _prev_sigterm
    if _installed:
        return
    atexit.register(reap_all)
    if threading.current_thread() is threading.main_thread():
        prev = signal.getsignal(signal.SIGTERM)
        if prev is not _on_sigterm:
            _prev_sigterm = prev
            signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


def running_qemus(root: Path | None = None) -> list[str]:
    """Command lines of the QEMU processes started from this cache (for leak checks)."""
    result = proc.run(["pgrep", "-a", "-f", "qemu-system-i386"], check=False)
    needle = str(root or cache.root())
    return [line for line in result.stdout.splitlines() if needle in line]
