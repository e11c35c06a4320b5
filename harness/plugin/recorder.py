"""The guest API's log of one test: every command sent to the guest, its phase and its outcome.

A :class:`Recorder` belongs to one test (the plugin makes it and sets its
phase); the guest API (:mod:`harness.plugin.guest`) calls :meth:`Recorder.add`
for every command.  :meth:`Recorder.trace` gives the typed
:class:`~harness.results.guestlog.TestTrace` the session records keep, from
which ``harness review`` and ``harness repro`` write reproducer scripts.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from harness.results.guestlog import MAX_OUTPUT, GuestCommand, Phase, TestTrace

MAX_COMMANDS = 2000
"""Commands kept per test; later ones are counted in ``dropped`` only."""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


@dataclass
class Recorder:
    """The commands one test sent, in order (a test that sends none has an empty log)."""

    nodeid: str = ""
    phase: Phase = "setup"
    commands: list[GuestCommand] = field(default_factory=list)
    dropped: int = 0
    failed_phase: Phase | None = None
    failed_after: int | None = None
    failed_line: int | None = None
    kernel_report: bool = False
    test_file: str = ""  # the test's module: each command notes the line of the test running it
    _last_end: float | None = None

    def start(self) -> float:
        """Call before sending a command; returns the time to pass to :meth:`add`."""
        return time.monotonic()

    def add(self, kind: str, command: str, *, started: float, user: str = "root",
            input: str | bytes | None = None, exit_status: int | None = None, stdout: str = "",
            stderr: str = "", error: str | None = None, replay_only: bool = False) -> int:
        """Record one command; returns its index (-1 when the log is full)."""
        gap = 0.0 if self._last_end is None or replay_only else max(0.0, started - self._last_end)
        if not replay_only:
            self._last_end = time.monotonic()
        if len(self.commands) >= MAX_COMMANDS:
            self.dropped += 1
            return -1
        text = input.decode(errors="replace") if isinstance(input, bytes) else input
        self.commands.append(GuestCommand(
            kind=kind, command=command, user=user, phase=self.phase, input=text, exit_status=exit_status,
            stdout=_cut(stdout, MAX_OUTPUT), stderr=_cut(stderr, MAX_OUTPUT // 4), error=error,
            gap=round(gap, 2), replay_only=replay_only, stdout_truncated=len(stdout) > MAX_OUTPUT,
            line=self.test_line()))
        return len(self.commands) - 1

    def test_line(self) -> int | None:
        """The line the test function is at: its frame is the outermost of the test's module.

        A command sent from a helper thread (a long script run while the test's thread watches
        the console) has no test frame of its own: the test's thread is at the line that started it.
        """
        line = self._line_in(sys._getframe(1))
        if line is None and threading.current_thread() is not threading.main_thread():
            main = sys._current_frames().get(threading.main_thread().ident or -1)
            line = self._line_in(main) if main is not None else None
        return line

    def _line_in(self, frame: FrameType | None) -> int | None:
        line = None
        while frame is not None:
            if self.test_file and frame.f_code.co_filename == self.test_file:
                line = frame.f_lineno
            frame = frame.f_back
        return line

    def set_pid(self, index: int, pid: int) -> None:
        """The pid a ``spawn`` command printed."""
        if 0 <= index < len(self.commands):
            self.commands[index] = dataclasses.replace(self.commands[index], pid=pid)

    def failed(self, phase: Phase, kernel_report: bool = False, line: int | None = None) -> None:
        """The test failed in ``phase`` (at ``line`` of the test function): remember how many
        commands had run (the first failure wins)."""
        if self.failed_phase is None:
            self.failed_phase = phase
            self.failed_after = len(self.commands)
            self.failed_line = line
        self.kernel_report = self.kernel_report or kernel_report

    def trace(self, kernel: str = "", behaviour: str = "", doc: str = "") -> TestTrace:
        return TestTrace(nodeid=self.nodeid, kernel=kernel, behaviour=behaviour, doc=doc,
                         commands=list(self.commands), failed_phase=self.failed_phase,
                         failed_after=self.failed_after, failed_line=self.failed_line,
                         kernel_report=self.kernel_report,
                         dropped=self.dropped)
