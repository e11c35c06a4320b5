"""What a boot (or a resume) ends with: :class:`BootInfo` when the guest is ready, else :class:`BootError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import StageError
from harness.machine.console import ConsoleEvent


class BootError(StageError):
    """The guest did not come up: kernel report, init failure, QEMU exit or timeout."""

    stage = "boot"

    def __init__(self, vm_name: str, reason: str, console_tail: str, console_log: Path | None,
                 event: ConsoleEvent | None = None) -> None:
        self.reason = reason
        self.console_tail = console_tail
        self.console_log = console_log
        self.event = event
        where = f" ({console_log})" if console_log else ""
        super().__init__(f"{vm_name}: boot failed: {reason}\n"
                         f"--- last console lines{where} ---\n{console_tail}")


@dataclass(frozen=True)
class BootInfo:
    ssh_port: int
    boot_seconds: float  # QEMU start -> first SSH login
    milestones: dict[str, float]  # name -> seconds after QEMU start, in order
    console_log: Path
    events: tuple[ConsoleEvent, ...] = ()  # non-fatal reports during the boot (lockdep...)
    resumed: bool = False  # resumed from a saved state (cfg.incoming): no boot, no milestones
