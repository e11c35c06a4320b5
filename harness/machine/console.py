"""The serial console, read as data: boot milestones and kernel reports (panic, oops, BUG, lockdep).

:func:`scan_console` analyses a recorded log; :class:`Scanner` is the same
analysis line by line, for the live watcher of a running VM
(:mod:`harness.machine.console_watch`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import image

#: (name, text) in boot order; the name is what BootInfo.milestones reports
MILESTONES: tuple[tuple[str, str], ...] = (
    ("kernel", "Linux version 2.6.20"),
    ("userspace", "Freeing unused kernel memory"),
    ("init-start", image.MILESTONE_INIT_START),
    ("network-up", image.MILESTONE_NETWORK_UP),
    ("sshd-up", image.MILESTONE_SSHD_UP),
    ("shutdown", image.MILESTONE_SHUTDOWN),
)
#: the milestones of a good boot, in order (the last one means "ssh is ready")
BOOT_MILESTONES = tuple(name for name, _ in MILESTONES if name != "shutdown")
READY_MILESTONE = "sshd-up"

_LOCKDEP = (
    r"possible recursive locking detected|inconsistent lock state"
    r"|possible circular locking dependency detected|possible irq lock inversion dependency detected"
    r"|-safe -> \S+-unsafe lock order detected|bad unlock balance detected|held lock freed"
    r"|lock held at task exit time|lock held when returning to user space"
    r"|trying to register non-static key"
)
#: first match wins; kinds in FATAL_KINDS stop a boot, CRASH_KINDS make crashed() true
_EVENT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("init-failed", re.compile(re.escape(image.MILESTONE_FAILED))),
    ("panic", re.compile(r"Kernel panic - not syncing")),
    ("lockdep", re.compile(_LOCKDEP)),
    # WARN_ON(): 2.6.20 prints "BUG: at file:line func()"; later kernels "WARNING: at ..."
    ("warning", re.compile(r"BUG: at \S+:\d+|BUG: warning at |WARNING:? at \S+|WARNING: CPU: \d+ PID:")),
    ("oops", re.compile(
        r"Unable to handle kernel|BUG: unable to handle kernel"
        r"|\b(Oops|general protection fault|invalid opcode|divide error|double fault"
        r"|stack segment|invalid TSS|segment not present|alignment check|bounds|overflow"
        r"|coprocessor segment overrun|int3|debug|nmi|device not available):? [0-9a-f]{4} \[#\d+\]"
        r"|\bOops: [0-9a-fx]+"
    )),
    ("bug", re.compile(r"kernel BUG at |\bBUG: ")),
    ("init-failed", re.compile(r"Failed to execute \S+|No init found|Attempted to kill init")),
)
FATAL_KINDS = frozenset({"panic", "oops", "bug", "init-failed"})
CRASH_KINDS = frozenset({"panic", "oops", "bug"})
#: reports that change nothing a test sees (lockdep: a possible deadlock, not a crash)
SIDE_KINDS = frozenset({"lockdep"})
#: an oops line this close after an oops/BUG line is the same report
_SAME_REPORT_LINES = 8
EXCERPT_BEFORE = 2
EXCERPT_AFTER = 40

_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|c)")


def normalize_line(line: str) -> str:
    """A console line without terminal escapes and carriage returns."""
    return _ANSI.sub("", line).replace("\r", "")


def normalize(text: str) -> str:
    return "\n".join(normalize_line(line) for line in text.split("\n"))


def classify_line(line: str) -> str | None:
    """The kind of kernel report that ``line`` starts, if any."""
    for kind, pattern in _EVENT_PATTERNS:
        if pattern.search(line):
            return kind
    return None


@dataclass(frozen=True)
class ConsoleEvent:
    kind: str  # panic | oops | bug | lockdep | warning | init-failed
    line: str  # the line that matched
    lineno: int  # index in the console's lines
    excerpt: str  # a few lines before, up to 40 after

    def __str__(self) -> str:
        return f"{self.kind}: {self.line.strip()}"


@dataclass(frozen=True)
class ConsoleVerdict:
    milestones: dict[str, int]  # milestone name -> line index where it appeared
    events: tuple[ConsoleEvent, ...]

    @property
    def first_event(self) -> ConsoleEvent | None:
        """The first kernel report of any kind (lockdep and warnings included)."""
        return self.events[0] if self.events else None

    @property
    def fatal(self) -> ConsoleEvent | None:
        """The first event that makes a boot fail (panic, oops, BUG, init failure)."""
        return next((e for e in self.events if e.kind in FATAL_KINDS), None)

    @property
    def crash(self) -> ConsoleEvent | None:
        return next((e for e in self.events if e.kind in CRASH_KINDS), None)

    @property
    def booted(self) -> bool:
        return READY_MILESTONE in self.milestones

    @property
    def clean(self) -> bool:
        return self.booted and not self.events

    def of_kind(self, *kinds: str) -> list[ConsoleEvent]:
        return [e for e in self.events if e.kind in kinds]


class Scanner:
    """Line-by-line milestone and report detection (shared by the live watcher)."""

    def __init__(self) -> None:
        self.milestones: dict[str, int] = {}
        self.events: list[tuple[str, int, str]] = []  # kind, lineno, line
        self.lineno = 0
        self._last_report = -(10**9)

    def feed(self, line: str) -> tuple[list[str], tuple[str, int, str] | None]:
        n = self.lineno
        self.lineno += 1
        new: list[str] = []
        for name, marker in MILESTONES:
            if name not in self.milestones and marker in line:
                self.milestones[name] = n
                new.append(name)
        kind = classify_line(line)
        if kind is None:
            return new, None
        if kind in ("oops", "bug") and n - self._last_report <= _SAME_REPORT_LINES:
            self._last_report = n  # "kernel BUG at" then "invalid opcode: 0000 [#1]"...
            return new, None
        if kind in ("oops", "bug"):
            self._last_report = n
        event = (kind, n, line)
        self.events.append(event)
        return new, event


def excerpt(lines: Sequence[str], lineno: int) -> str:
    return "\n".join(lines[max(0, lineno - EXCERPT_BEFORE): lineno + EXCERPT_AFTER + 1])


def read_console(path: Path) -> str:
    """A console log as text.  Not ``Path.read_text``: its newline translation
    turns the serial console's ``\\r\\r\\n`` into two lines."""
    return path.read_bytes().decode(errors="replace")


def scan_console(text: str | bytes) -> ConsoleVerdict:
    """Milestones reached and kernel reports found in a console log (see :func:`read_console`)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = normalize(text).split("\n")
    scanner = Scanner()
    for line in lines:
        scanner.feed(line)
    events = tuple(ConsoleEvent(k, line, n, excerpt(lines, n)) for k, n, line in scanner.events)
    return ConsoleVerdict(dict(scanner.milestones), events)
