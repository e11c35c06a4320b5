"""The guest commands a test ran (recorded by the guest API) and where the test failed: reproducer input.

:class:`GuestCommand` is one command sent to the guest with its outcome;
:class:`TestTrace` is every command of one test, the phase each ran in
(``setup``, ``call``, ``teardown``), and -- when the test failed -- how many
commands had run when it failed and whether the kernel reported a problem.
The plugin writes traces into the session records (``records.json``);
``harness review`` and ``harness repro`` turn them into reproducer scripts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Phase = Literal["setup", "call", "teardown"]
PHASES: tuple[Phase, ...] = ("setup", "call", "teardown")
MAX_OUTPUT = 4000
"""Characters of a command's stdout kept in a trace (stderr: a quarter of it)."""


@dataclass(frozen=True)
class GuestCommand:
    """One command as the guest received it (a shell command line) and what it gave.

    ``kind`` names the guest API call (run, sh, probe, write, read, spawn,
    kill, mountpoint...).  ``exit_status`` is None when the command did not
    complete (an SSH timeout or a dead VM: ``error`` says which) or was not
    sent at all (``replay_only``: something a fresh guest needs that this VM
    already had, e.g. a mount point made by an earlier test).  ``pid`` is the
    pid a ``spawn`` returned.  ``gap`` is the seconds the test spent on the
    host since the previous command ended (a poll's sleep).  ``stdout`` is cut
    at :data:`MAX_OUTPUT` characters (``stdout_truncated`` then).  ``line`` is
    the line of the test function that was running when it was sent.
    """

    kind: str
    command: str
    user: str = "root"
    phase: Phase = "call"
    input: str | None = None
    exit_status: int | None = None
    stdout: str = ""
    stderr: str = ""
    pid: int | None = None
    error: str | None = None
    gap: float = 0.0
    replay_only: bool = False
    stdout_truncated: bool = False
    line: int | None = None  # the line of the test function that sent it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuestCommand:
        phase = data.get("phase", "call")
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        status, pid = data.get("exit_status"), data.get("pid")
        for key, value in (("exit_status", status), ("pid", pid)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{key!r} must be an integer or null")
        return cls(kind=_s(data, "kind"), command=_s(data, "command"), user=_s(data, "user", "root"),
                   phase=phase, input=_opt(data, "input"), exit_status=status,
                   stdout=_s(data, "stdout", ""), stderr=_s(data, "stderr", ""), pid=pid,
                   error=_opt(data, "error"), gap=float(data.get("gap", 0.0)),
                   replay_only=bool(data.get("replay_only", False)),
                   stdout_truncated=bool(data.get("stdout_truncated", False)), line=_opt_int(data, "line"))


@dataclass
class TestTrace:
    """Everything one test sent to the guest, and where it failed.

    ``failed_phase``/``failed_after``: the phase that failed and how many
    commands (of :attr:`commands`, all phases) had run by then.
    ``kernel_report``: the kernel reported a problem (oops, BUG, lockdep...)
    during the test.  ``behaviour`` is the test's xfail reason (what a known
    bug makes the kernel do), ``doc`` the first paragraph of its docstring.
    """

    __test__ = False  # not a pytest test class

    nodeid: str
    kernel: str = ""
    behaviour: str = ""
    commands: list[GuestCommand] = field(default_factory=list)
    failed_phase: Phase | None = None
    failed_after: int | None = None
    kernel_report: bool = False
    dropped: int = 0  # commands not kept (a test that ran very many)
    doc: str = ""  # the first paragraph of the test's docstring
    failed_line: int | None = None  # the line of the test function where it failed

    def to_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "kernel": self.kernel, "behaviour": self.behaviour, "doc": self.doc,
                "failed_line": self.failed_line,
                "commands": [c.to_dict() for c in self.commands], "failed_phase": self.failed_phase,
                "failed_after": self.failed_after, "kernel_report": self.kernel_report,
                "dropped": self.dropped}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TestTrace:
        commands = data.get("commands", [])
        if not isinstance(commands, list) or not all(isinstance(c, Mapping) for c in commands):
            raise TypeError("'commands' must be a list of objects")
        phase = data.get("failed_phase")
        if phase is not None and phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        after = data.get("failed_after")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
            raise TypeError("'failed_after' must be an integer or null")
        return cls(nodeid=_s(data, "nodeid"), kernel=_s(data, "kernel", ""),
                   behaviour=_s(data, "behaviour", ""),
                   commands=[GuestCommand.from_dict(c) for c in commands], failed_phase=phase,
                   failed_after=after, kernel_report=bool(data.get("kernel_report", False)),
                   dropped=int(data.get("dropped", 0)), doc=_s(data, "doc", ""),
                   failed_line=_opt_int(data, "failed_line"))

    @property
    def failed(self) -> bool:
        return self.failed_phase is not None

    @property
    def failed_on_its_own(self) -> bool:
        """The test's own statement raised (not only the plugin's check of the kernel log)."""
        return self.failed_phase == "call" and self.failed_line is not None

    def failing_index(self) -> int | None:
        """The index of the command the test failed at: the last one sent before the failure.

        Commands a ``finally:`` sent after the failure count as sent before it
        (the failure is noted when the test has ended), so when the lines are
        known the last command sent by the failing line is taken, else the last
        one sent from a line above it; else the last command sent.
        """
        if self.failed_after is None:
            return None
        sent = [(i, c) for i, c in enumerate(self.commands[:self.failed_after]) if not c.replay_only]
        if not sent:
            return None
        if self.failed_line is not None and self.failed_phase == "call":
            at = [i for i, c in sent if c.line == self.failed_line]
            above = [i for i, c in sent if c.line is not None and c.line < self.failed_line]
            if at or above:
                return (at or above)[-1]
        return sent[-1][0]


def _s(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string")
    return value


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{key!r} must be an integer or null")
    return value


def _opt(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string or null")
    return value
