"""One QEMU guest: start it, wait until it is ready (booted or resumed), run commands, stop it.

::

    cfg = VMConfig.for_image(kernel=bzimage, image=img)
    with VM(cfg) as vm:           # starts QEMU
        info = vm.wait_ready()    # BootError if the kernel or /init fails
        mark = vm.mark()
        vm.run(["uname", "-r"], check=True)
        assert not vm.events_since(mark)   # no oops/lockdep/warning meanwhile
    # QEMU is gone here, whatever happened (exceptions and Ctrl-C included)

Readiness is always a signal, never a lucky poll: a booting guest is ready
when its console prints the sshd-up milestone; a guest resumed from a saved
state when QEMU's monitor reports the guest running (the RESUME event at the
end of the incoming migration).  Only then does SSH connect.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from harness import cache, proc
from harness.errors import HarnessTimeout, InfraError, InputError, StageError
from harness.machine import registry
from harness.machine.boot import BootError, BootInfo
from harness.machine.console import (
    BOOT_MILESTONES,
    CRASH_KINDS,
    FATAL_KINDS,
    READY_MILESTONE,
    ConsoleEvent,
    ConsoleVerdict,
    classify_line,
    read_console,
    scan_console,
)
from harness.machine.console_watch import SYNC_MARKER, ConsoleWatch
from harness.machine.qemu import QEMU, VMConfig, free_port, qemu_argv
from harness.machine.qmp import QMP, QMPError, QMPListener
from harness.machine.registry import running_qemus
from harness.machine.ssh import CommandResult, Guest, SSHGuestDown, SSHTimeout

__all__ = ["QEMU", "BootError", "BootInfo", "ConsoleEvent", "ConsoleVerdict", "VM", "VMConfig",
           "classify_line", "free_port", "live_vms", "qemu_argv", "read_console", "running_qemus",
           "scan_console"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: seconds between SSH login attempts; the first one comes right after the ready signal
LOGIN_RETRY = 0.05
PORT_RETRIES = 3


class _PortClash(Exception):
    """QEMU could not bind the forwarded port (taken meanwhile): start again on another."""


_names = itertools.count()


class VM:
    """One QEMU guest.  Use as a context manager; :meth:`stop` is idempotent."""

    def __init__(self, cfg: VMConfig, name: str | None = None) -> None:
        self.cfg = cfg
        self.name = name or f"vm{next(_names)}"
        self.console_log = cfg.console_log or cache.subdir("vm") / f"{self.name}-{os.getpid()}.console.log"
        self.port: int | None = None
        self.boot_info: BootInfo | None = None
        self._child: proc.PtyChild | None = None
        self._pid: int | None = None
        self._plock = threading.RLock()  # the QEMU child (proc.PtyChild): read, poll, signal, close
        self._watch: ConsoleWatch | None = None
        self._listener: QMPListener | None = None
        self._qmp: QMP | None = None
        self._guest: Guest | None = None
        self._ssh_ok = False
        self._syncs = itertools.count(1)
        self._exitstatus: int | None = None
        self._reaped = False

    def __repr__(self) -> str:
        return f"<VM {self.name} port={self.port} pid={self._pid}>"

    @property
    def pid(self) -> int | None:
        """QEMU's process id (None before start)."""
        return self._pid

    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- starting -----------------------------------------------------------------

    def start(self) -> VM:
        """Start QEMU (returns at once; :meth:`wait_ready` waits for the boot)."""
        if self._child is not None:
            raise StageError(f"{self.name}: already started", stage="boot")
        for path, what in ((self.cfg.kernel, "kernel"), (self.cfg.initramfs, "initramfs"),
                           (self.cfg.incoming, "saved guest state")):
            if path is not None and not (Path(path).is_file() or Path(path).is_fifo()):
                raise InputError(f"{self.name}: {what} {path} does not exist")
        self._spawn(self.cfg.ssh_port or free_port())
        return self

    def _spawn(self, port: int) -> None:
        self.port = port
        self._listener = QMPListener()
        try:
            child = proc.spawn(qemu_argv(self.cfg, port, self._listener.path), self.console_log)
        except BaseException:
            self._listener.close()
            self._listener = None
            raise
        self._child, self._pid, self._reaped = child, child.pid, False
        registry.add(self)
        self._watch = ConsoleWatch(child, self.name, self._plock)
        self._watch.start()
        self._guest = Guest("127.0.0.1", port, dict(self.cfg.keys), host_key=self.cfg.host_key,
                            alive=self.alive, name=self.name)

    @property
    def watch(self) -> ConsoleWatch:
        if self._watch is None:
            raise StageError(f"{self.name}: not started", stage="boot")
        return self._watch

    def alive(self) -> bool:
        """Is QEMU running?"""
        if self._child is None or self._reaped:
            return False
        if self.watch.exited.is_set():
            with self._plock:
                return bool(self._child.isalive()) if not self._reaped else False
        return True

    def _port_clash(self, wait: float = 0.0) -> bool:
        """Did QEMU exit because its (randomly chosen) SSH port was taken meanwhile?
        ``wait``: seconds to wait for QEMU to exit, when something already failed."""
        if self.cfg.ssh_port is not None or not self.watch.exited.wait(wait):
            return False
        return "could not set up host forwarding rule" in self.watch.recent_text().lower()

    def _retry_on_port_clash(self, step: Callable[[], T]) -> T:
        """``step()``; when QEMU could not bind its random port, start again on another."""
        for attempt in range(PORT_RETRIES + 1):
            try:
                return step()
            except _PortClash:
                if attempt == PORT_RETRIES:
                    raise InfraError(f"{self.name}: no free port for the SSH forward after "
                                     f"{PORT_RETRIES + 1} tries") from None
                log.info("%s: port %s was taken, retrying on another", self.name, self.port)
                self._reap_child()
                self._spawn(free_port())
        raise AssertionError("unreachable")  # pragma: no cover

    # -- waiting ------------------------------------------------------------------

    def wait_ready(self, timeout: float | None = None, login: bool = True) -> BootInfo:
        """Wait until sshd is up and root (or the first user) can log in.

        ``timeout`` counts from QEMU's start (default ``cfg.boot_timeout``).
        Raises :class:`BootError` (and stops the VM) on a panic, oops, BUG,
        init failure, QEMU exit or timeout.  ``login=False`` returns once
        sshd is up, without connecting (nothing of the harness in the guest
        yet: the moment to :meth:`save_state`).
        """
        if self._child is None:
            raise StageError(f"{self.name}: not started", stage="boot")
        limit = self.cfg.boot_timeout if timeout is None else timeout
        try:
            self._retry_on_port_clash(lambda: self._wait_signal(limit))
            if login:
                self._login(limit)
            return self._ready_info(login)
        except BaseException:
            self.stop()
            raise

    def _deadline(self, limit: float) -> float:
        return self.watch.t0 + limit

    def _monitor(self, deadline: float) -> QMP:
        """The QMP session (QEMU connects as it starts)."""
        if self._qmp is None:
            assert self._listener is not None
            try:
                self._qmp = self._listener.accept(deadline, lambda: self.watch.exited.is_set())
            except QMPError:
                if self._port_clash(wait=2.0):
                    raise _PortClash() from None
                raise
        return self._qmp

    def _wait_signal(self, limit: float) -> None:
        """Wait for the ready signal: sshd-up on the console, or RESUME from QMP."""
        deadline = self._deadline(limit)
        if self.cfg.incoming is not None:
            try:
                self._monitor(deadline).wait_running(deadline)
            except (QMPError, HarnessTimeout) as exc:
                if self._port_clash(wait=2.0):
                    raise _PortClash() from None
                self._check_boot(limit, after_ssh=True)
                raise self._boot_error(f"QEMU monitor: {exc}") from None
            return
        watch = self.watch
        watch.wait_for(lambda: watch.reached(READY_MILESTONE)
                       or watch.first_event(FATAL_KINDS) is not None, deadline)
        if self._port_clash():
            raise _PortClash()
        self._check_boot(limit)

    def _login(self, limit: float) -> None:
        user = "root" if "root" in self.cfg.keys else next(iter(self.cfg.keys), None)
        if user is None:
            raise InputError(f"{self.name}: no ssh keys configured (VMConfig.keys)")
        try:
            self.ssh.wait_ready(self._deadline(limit), poll=LOGIN_RETRY, user=user)
        except SSHGuestDown:
            self._check_boot(limit, after_ssh=True)
            raise
        except SSHTimeout as exc:
            self._check_boot(limit, after_ssh=True)
            what = "resumed guest:" if self.cfg.incoming is not None else "sshd is up but"
            raise self._boot_error(f"{what} no SSH login within {limit:g}s: {exc}") from None
        self._check_boot(limit, after_ssh=True)

    def _ready_info(self, login: bool) -> BootInfo:
        watch = self.watch
        elapsed = time.monotonic() - watch.t0
        milestones = watch.milestones()
        if login:
            milestones["ssh-login"] = elapsed
        info = BootInfo(self.port or 0, elapsed, milestones, self.console_log,
                        tuple(watch.events_since(0)), resumed=self.cfg.incoming is not None)
        if login:
            self._ssh_ok = True
            self.boot_info = info
            log.info("%s: ready on 127.0.0.1:%s after %.2fs", self.name, self.port, elapsed)
        return info

    def _check_boot(self, limit: float, after_ssh: bool = False) -> None:
        """Raise the :class:`BootError` that explains why the guest is not ready, if it is not."""
        watch = self.watch
        fatal = watch.first_event(FATAL_KINDS)
        if fatal is not None:
            watch.exited.wait(2.0)  # let the rest of the report (call trace...) reach the console
            fatal = watch.first_event(FATAL_KINDS) or fatal
            raise self._boot_error(f"{fatal.kind}: {fatal.line.strip()}", fatal)
        reached = [m for m in BOOT_MILESTONES if watch.reached(m)]
        if watch.exited.is_set():
            status = self._reap_child()
            raise self._boot_error(
                f"QEMU exited (status {status}) after {time.monotonic() - watch.t0:.1f}s; "
                f"milestones reached: {', '.join(reached) or 'none'}")
        if not watch.reached(READY_MILESTONE) and not after_ssh:
            missing = next(m for m in BOOT_MILESTONES if m not in reached)
            raise self._boot_error(f"timed out after {limit:g}s waiting for {missing!r} "
                                   f"(reached: {', '.join(reached) or 'nothing'})")

    def _boot_error(self, reason: str, event: ConsoleEvent | None = None) -> BootError:
        return BootError(self.name, reason, self.console_tail(40), self.console_log, event)

    def boot(self) -> BootInfo:
        """:meth:`start` then :meth:`wait_ready`."""
        self.start()
        return self.wait_ready()

    def save_state(self, dest: Path, timeout: float = 60.0) -> None:
        """Write the running guest's whole state (RAM, devices) to ``dest`` and stop QEMU.

        The file resumes with ``VMConfig(incoming=dest)`` (same kernel,
        initramfs, memory and devices) in a fraction of a boot.  ``dest``
        appears only when complete.
        """
        if self._child is None or self.watch.exited.is_set():
            raise StageError(f"{self.name}: save_state: QEMU is not running", stage="boot")
        deadline = time.monotonic() + timeout
        try:
            with cache.disk_full_guard(dest.parent, "saving the guest state"):
                self._monitor(deadline).save(dest, deadline)
        finally:
            self.stop(graceful=False)

    # -- SSH and the console ----------------------------------------------------------

    @property
    def ssh(self) -> Guest:
        if self._guest is None:
            raise StageError(f"{self.name}: not started", stage="boot")
        return self._guest

    def run(self, cmd: str | Sequence[str], user: str = "root", timeout: float = 60,
            check: bool = False, input: str | bytes | None = None, fresh: bool = False) -> CommandResult:
        """Run ``cmd`` as ``user`` (see :meth:`Guest.run <harness.machine.ssh.Guest.run>`)."""
        return self.ssh.run(cmd, user=user, timeout=timeout, check=check, input=input, fresh=fresh)

    def sync_console(self, timeout: float = 5.0) -> bool:
        """Wait until what the guest printed so far is in :meth:`events_since`: on a signal, a
        numbered marker the guest prints after it (/dev/kmsg).  A pty hands data on through a
        work queue, so an empty pty (``ConsoleWatch.sync``, the fallback) can come too early."""
        if self._watch is None:
            return True
        if not self._ssh_ok or self.crashed() or not self.alive():
            return self._watch.sync(min(timeout, 1.0))
        number = next(self._syncs)
        deadline = time.monotonic() + timeout
        try:
            self.ssh.run(f"echo '{SYNC_MARKER} {number}' > /dev/kmsg", timeout=timeout)
        except (InfraError, OSError, EOFError):
            return self._watch.sync(min(timeout, 1.0))
        return self._watch.wait_synced(number, deadline)

    def mark(self) -> int:
        """A position in the console (a line count) for :meth:`console_since`."""
        return self.watch.mark()

    def console_since(self, mark: int = 0) -> str:
        return self.watch.since(mark)

    def console_tail(self, n: int = 40) -> str:
        return self.watch.tail(n)

    def events_since(self, mark: int = 0) -> list[ConsoleEvent]:
        """Kernel reports (any kind) printed since ``mark``."""
        return self.watch.events_since(mark)

    def milestones(self) -> dict[str, float]:
        return self.watch.milestones()

    def crash(self) -> ConsoleEvent | None:
        """The first panic, oops or BUG on the console, if any."""
        return None if self._watch is None else self._watch.first_event(CRASH_KINDS)

    def crashed(self) -> bool:
        return self.crash() is not None

    def verdict(self) -> ConsoleVerdict:
        return scan_console(self.console_since(0))

    # -- stopping -----------------------------------------------------------------

    def stop(self, graceful: bool = True) -> int | None:
        """Shut the guest down and reap QEMU; returns its exit status (idempotent).

        A booted, healthy guest is asked to ``reboot -f`` (QEMU exits because
        of -no-reboot); then QEMU gets SIGTERM, then SIGKILL.  ``graceful=False``
        skips the reboot: for a guest being thrown away.
        """
        if self._child is None or self._reaped:
            return self._exitstatus
        try:
            if graceful and self._ssh_ok and not self.watch.exited.is_set() and not self.crashed():
                self._request_reboot()
        finally:
            try:
                if self._guest is not None:
                    self._guest.close()
            finally:
                self._reap_child()
        return self._exitstatus

    def _request_reboot(self) -> None:
        try:
            t = self.ssh.connection("root", timeout=self.cfg.shutdown_timeout)
            chan = t.open_session(timeout=self.cfg.shutdown_timeout)
            chan.exec_command("reboot -f")
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to signals
            log.debug("%s: reboot -f over ssh failed: %s", self.name, exc)
            return
        if self.watch.exited.wait(self.cfg.shutdown_timeout):
            log.debug("%s: guest rebooted, QEMU exited", self.name)

    def _signal(self, sig: int) -> None:
        with self._plock:
            if self._reaped or self._pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, sig)

    def _close_monitor(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _reap_child(self) -> int | None:
        """SIGTERM, then SIGKILL, then reap.  Always leaves no process behind."""
        child = self._child
        if child is None or self._reaped:
            return self._exitstatus
        exited = self.watch.exited
        try:
            if not exited.wait(0):
                self._signal(signal.SIGTERM)
                if not exited.wait(5.0):
                    self._signal(signal.SIGKILL)
                    exited.wait(5.0)
        finally:
            with self._plock:
                with contextlib.suppress(Exception):
                    child.close(force=True)
                if child.isalive():  # pragma: no cover - close(force) kills
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(child.pid, 0)
                self._reaped = True
                self._exitstatus = child.exitstatus if child.exitstatus is not None else (
                    -child.signalstatus if child.signalstatus is not None else None)
            with contextlib.suppress(Exception):
                if child.logfile_read is not None:
                    child.logfile_read.close()
            self.watch.join(timeout=2.0)
            self._close_monitor()
            registry.discard(self)
        log.info("%s: QEMU (pid %s) stopped, status %s", self.name, self._pid, self._exitstatus)
        return self._exitstatus

    def kill(self) -> None:
        """Kill QEMU at once (atexit / SIGTERM): no SSH, no grace period."""
        if self._child is None or self._reaped or self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)
        self._reaped = True
        self._close_monitor()
        registry.discard(self)


def live_vms() -> list[VM]:
    return [vm for vm in registry.live() if isinstance(vm, VM)]

