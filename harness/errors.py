"""The error taxonomy: one class per kind of failure, and the exit code of each.

Every failure the harness reports without a traceback is a
:class:`HarnessError`.  Its class says what kind it is; code never tells
errors apart by their text.

========================  ====  ===============================================
class                     exit  meaning
========================  ====  ===============================================
``InputError``            2     the user gave something the harness cannot use;
                                nothing was written to the cache
``StageError``            2     a stage failed on valid input (``stage`` names
                                it: source, patch, config, build, image, boot)
``InfraError``            2     the machinery failed: QEMU or SSH died, a tool
                                is missing, the disk is full
``HarnessTimeout``        2     something took longer than its limit (an
                                ``InfraError``)
``GuestCrash``            125   the guest kernel crashed or its VM died, so a
                                guest command has no status (``harness run``)
``Interrupted``           130   SIGINT (Ctrl-C); 143 for SIGTERM
========================  ====  ===============================================

Besides these, a command exits 0 on success and 1 when tests failed (or
``harness run``'s guest command exited 1, which it passes through).
:data:`EXIT_CODES` is the table README.md shows.
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a test failed (or: the guest command's status, doctor found problems, bisect open)
    ERROR = 2  # input, stage, infrastructure, timeout
    GUEST_CRASHED = 125
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


#: exit code -> meaning, in the order README.md lists them
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (ExitCode.OK, "success; every test passed (skips and expected failures are fine)"),
    (ExitCode.FAILED, "a test failed; `harness run`: the guest command's own status (any value it "
                      "exits with); `harness doctor`: something is missing; `harness bisect`: no "
                      "single first bad candidate; `harness review`: bugs were found"),
    (ExitCode.ERROR, "bad input, a failed stage (source, patch, config, build, image, boot), an "
                     "infrastructure error (QEMU or SSH died, a tool missing, disk full) or a "
                     "timeout; one line on stderr"),
    (ExitCode.GUEST_CRASHED, "`harness run`: the guest kernel crashed or the VM died, so the command "
                             "has no status"),
    (ExitCode.INTERRUPTED, "interrupted by SIGINT (Ctrl-C); results so far are written, marked "
                           "interrupted"),
    (ExitCode.TERMINATED, "stopped by SIGTERM; results so far are written, marked interrupted"),
)


class HarnessError(Exception):
    """Base class: a failure the CLI reports in one line, without a traceback."""

    exit_code: int = ExitCode.ERROR
    kind = "error"


class InputError(HarnessError):
    """Bad user input: names the input and what was expected."""

    kind = "input"


class StageError(HarnessError):
    """A stage failed on valid input; :attr:`stage` names it."""

    kind = "stage"
    stage = "stage"

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        if stage is not None:
            self.stage = stage


class InfraError(HarnessError):
    """Infrastructure failure (VM, SSH, a missing tool, a full disk), as opposed to a verdict."""

    kind = "infrastructure"


class ToolMissing(InfraError):
    """A program the harness runs is not installed (``harness doctor`` says how to get it)."""


class DiskFull(InfraError):
    """No space left on the device that holds ``path``."""

    def __init__(self, path: object, what: str = "") -> None:
        self.path = path
        doing = f" while {what}" if what else ""
        super().__init__(f"{path}: no space left on device{doing}; free some space and run again")


class HarnessTimeout(InfraError):
    """Something took longer than it is allowed to."""

    kind = "timeout"


class GuestCrash(HarnessError):
    """The guest kernel crashed (panic, oops, BUG) or its VM died under a command."""

    kind = "guest-crash"
    exit_code = ExitCode.GUEST_CRASHED


class Interrupted(HarnessError):
    """The run was stopped by a signal (SIGINT or SIGTERM)."""

    kind = "interrupted"

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")
        self.exit_code = 128 + signum
