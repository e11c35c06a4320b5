"""Boot stage: one QEMU guest, its serial console, and SSH into it.

::

    cfg = VMConfig.for_image(kernel=bzimage, image=img)
    with VM(cfg) as vm:           # starts QEMU
        info = vm.wait_ready()    # BootError if the kernel or /init fails
        mark = vm.mark()
        vm.ssh.run(["uname", "-r"], check=True)
        assert not vm.events_since(mark)   # no oops/lockdep/warning meanwhile
    # QEMU is gone here, whatever happened (exceptions and Ctrl-C included)

QEMU runs under TCG by default (2.6.20 guests hang under KVM on the machines
this was written on), with user-mode networking whose only port forward binds
127.0.0.1.  Its serial console goes to a pseudo-terminal that a background
thread drains into ``console_log`` for the whole life of the VM: it records
the boot milestones and every kernel report (panic, oops, BUG, lockdep,
warning) so a crash after the boot is seen too (:meth:`VM.crashed`).

:func:`scan_console` is the same analysis as a pure function over a recorded
log.  No QEMU outlives the harness: :meth:`VM.stop` always reaps it, and VMs
still running at interpreter exit or on SIGTERM are killed.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import fcntl
import itertools
import logging
import os
import re
import select
import shlex
import signal
import socket
import struct
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from harness import cache, image, proc
from harness.errors import InputError, StageError
from harness.machine.ssh import CommandResult, Guest, SSHGuestDown, SSHTimeout

log = logging.getLogger(__name__)

QEMU = "qemu-system-i386"
# 2.6.20 reboots after a panic only for panic=N with N > 0 (a negative value,
# "at once" in later kernels, makes it spin forever at 100% CPU); with
# -no-reboot the reboot makes QEMU exit, so a crashed guest goes away by itself.
BASE_APPEND = "console=ttyS0 rdinit=/init panic=1"
DEFAULT_BOOT_TIMEOUT = 60.0

# --- console analysis -------------------------------------------------------------

#: (name, text) in boot order; the name is what BootInfo.milestones reports
MILESTONES: tuple[tuple[str, str], ...] = (
    ("kernel", "Linux version 2.6.20"),
    ("userspace", "Freeing unused kernel memory"),
    ("init-start", image.MILESTONE_INIT_START),
    ("network-up", image.MILESTONE_NETWORK_UP),
    ("sshd-up", image.MILESTONE_SSHD_UP),
    ("shutdown", image.MILESTONE_SHUTDOWN),
)
BOOT_MILESTONES = ("kernel", "userspace", "init-start", "network-up", "sshd-up")
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


class _Scanner:
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


def _excerpt(lines: Sequence[str], lineno: int) -> str:
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
    scanner = _Scanner()
    for line in lines:
        scanner.feed(line)
    events = tuple(ConsoleEvent(k, line, n, _excerpt(lines, n)) for k, n, line in scanner.events)
    return ConsoleVerdict(dict(scanner.milestones), events)


# --- configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class VMConfig:
    kernel: Path
    initramfs: Path | None
    memory_mb: int = 256
    append: str = ""  # extra kernel command line, after BASE_APPEND
    kvm: bool = False
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT  # QEMU start -> SSH login
    console_log: Path | None = None  # None: <cache>/vm/<name>-<pid>.console.log
    ssh_port: int | None = None  # host port; None: a free one on 127.0.0.1
    keys: Mapping[str, Path] = field(default_factory=dict)  # user -> private key
    host_key: str | None = None  # "ssh-ed25519 AAAA..." expected from the guest
    guest_ssh_port: int = 22
    qemu: str = QEMU
    nic: str = "rtl8139"  # QEMU NIC model; the kernel config must have its driver (8139too)
    qmp_socket: Path | None = None  # a QMP monitor on this unix socket (needed by save_state)
    incoming: Path | None = None  # resume the guest saved in this file instead of booting
    extra_args: tuple[str, ...] = ()
    shutdown_timeout: float = 3.0  # for `reboot -f` over SSH before signalling QEMU

    @classmethod
    def for_image(cls, kernel: Path, img: image.Image, **kw: Any) -> VMConfig:
        """A config for ``kernel`` booting the guest image ``img`` (keys, host key, port)."""
        return cls(kernel=kernel, initramfs=img.initramfs, keys=dict(img.client_keys),
                   host_key=img.host_public_key, guest_ssh_port=img.ssh_port, **kw)

    def kernel_append(self) -> str:
        extra = self.append.strip()
        return f"{BASE_APPEND} {extra}" if extra else BASE_APPEND


def qemu_argv(cfg: VMConfig, port: int) -> list[str]:
    """The QEMU command line; the SSH forward listens on 127.0.0.1:``port`` only."""
    if any(c in cfg.append for c in "\n\r\0"):
        raise InputError(f"kernel command line {cfg.append!r}: no newlines or NUL bytes")
    if not 0 < port < 65536:
        raise InputError(f"ssh port {port} out of range")
    argv = [cfg.qemu, "-m", str(cfg.memory_mb), "-nographic", "-no-reboot",
            "-kernel", str(cfg.kernel)]
    if cfg.initramfs is not None:
        argv += ["-initrd", str(cfg.initramfs)]
    argv += [
        "-append", cfg.kernel_append(),
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{cfg.guest_ssh_port}",
        # romfile= skips the iPXE option ROM: nothing boots from the network.
        "-device", f"{cfg.nic},netdev=n0,romfile=",
    ]
    if cfg.kvm:
        argv += ["-enable-kvm", "-cpu", "host"]
    if cfg.qmp_socket is not None:
        if "," in str(cfg.qmp_socket):
            raise InputError(f"QMP socket {cfg.qmp_socket}: no commas (QEMU option syntax)")
        argv += ["-qmp", f"unix:{cfg.qmp_socket},server=on,wait=off"]
    if cfg.incoming is not None:
        # QEMU runs exec: URIs with /bin/sh -c: the path is quoted
        argv += ["-incoming", f"exec:cat {shlex.quote(str(cfg.incoming))}"]
    argv += list(cfg.extra_args)
    return argv


def _pending(fd: int) -> int:
    """Bytes waiting to be read on ``fd`` (0 when it cannot tell: closed)."""
    try:
        buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", buf)[0])


_recent_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (and not handed out recently by this process)."""
    with _ports_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _recent_ports:
                _recent_ports.add(port)
                return port
    raise StageError("no free TCP port found on 127.0.0.1")


# --- errors and results ------------------------------------------------------------


class BootError(StageError):
    """The guest did not come up: kernel report, init failure, QEMU exit or timeout."""

    def __init__(self, vm_name: str, reason: str, console_tail: str, console_log: Path | None,
                 event: ConsoleEvent | None = None) -> None:
        self.reason = reason
        self.console_tail = console_tail
        self.console_log = console_log
        self.event = event
        where = f" ({console_log})" if console_log else ""
        super().__init__(
            f"{vm_name}: boot failed: {reason}\n"
            f"--- last console lines{where} ---\n{console_tail}"
        )


@dataclass(frozen=True)
class BootInfo:
    ssh_port: int
    boot_seconds: float  # QEMU start -> first SSH login
    milestones: dict[str, float]  # name -> seconds after QEMU start, in order
    console_log: Path
    events: tuple[ConsoleEvent, ...] = ()  # non-fatal reports during the boot (lockdep...)
    resumed: bool = False  # resumed from a saved state (cfg.incoming): no boot, no milestones


# --- the process registry: no QEMU survives the harness ----------------------------

_live: set[VM] = set()
_live_lock = threading.RLock()  # re-entered by the SIGTERM handler
_handlers_installed = False
_prev_sigterm: Any = None


def _reap_all() -> None:
    with _live_lock:
        vms = list(_live)
    for vm in vms:
        vm.kill()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _reap_all()
    prev = _prev_sigterm
    if callable(prev):
        prev(signum, frame)
    elif prev != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install_handlers() -> None:
    global _handlers_installed, _prev_sigterm
    if _handlers_installed:
        return
    atexit.register(_reap_all)
    if threading.current_thread() is threading.main_thread():
        prev = signal.getsignal(signal.SIGTERM)
        if prev is not _on_sigterm:
            _prev_sigterm = prev
            signal.signal(signal.SIGTERM, _on_sigterm)
    _handlers_installed = True


def live_vms() -> list[VM]:
    with _live_lock:
        return list(_live)


# --- the VM ------------------------------------------------------------------------

_names = itertools.count()


class VM:
    """One QEMU guest.  Use as a context manager; :meth:`stop` is idempotent."""

    def __init__(self, cfg: VMConfig, name: str | None = None) -> None:
        self.cfg = cfg
        self.name = name or f"vm{next(_names)}"
        self.console_log = cfg.console_log or cache.subdir("vm") / f"{self.name}-{os.getpid()}.console.log"
        self.port: int | None = None
        self._child: Any = None
        self._pid: int | None = None
        self._plock = threading.RLock()  # the pexpect child: read, poll, signal, close
        self._cond = threading.Condition()
        self._busy = False  # the watcher has read console bytes it has not fed yet
        self._lines: list[str] = []
        self._partial = ""
        self._scanner = _Scanner()
        self._milestones: dict[str, float] = {}
        self._events: list[tuple[str, int, str]] = []
        self._exited = threading.Event()
        self._watcher: threading.Thread | None = None
        self._t0 = 0.0
        self._ssh_ok = False
        self._guest: Guest | None = None
        self._exitstatus: int | None = None
        self._reaped = False
        self._auto_port = cfg.ssh_port is None
        self.boot_info: BootInfo | None = None

    def __repr__(self) -> str:
        return f"<VM {self.name} port={self.port} pid={self._pid}>"

    @property
    def pid(self) -> int | None:
        """QEMU's process id (None before start)."""
        return self._pid

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> VM:
        """Start QEMU (returns at once; :meth:`wait_ready` waits for the boot)."""
        if self._child is not None:
            raise StageError(f"{self.name}: already started")
        for path, what in ((self.cfg.kernel, "kernel"), (self.cfg.initramfs, "initramfs"),
                           (self.cfg.incoming, "saved guest state")):
            if path is not None and not Path(path).is_file():
                raise InputError(f"{self.name}: {what} {path} does not exist")
        _install_handlers()
        self._spawn(self.cfg.ssh_port or free_port())
        return self

    def _spawn(self, port: int) -> None:
        self.port = port
        with self._cond:
            self._lines = []
            self._partial = ""
            self._scanner = _Scanner()
            self._milestones = {}
            self._events = []
        self._exited.clear()
        self._t0 = time.monotonic()
        child = proc.spawn(qemu_argv(self.cfg, port), self.console_log)
        self._child = child
        self._pid = child.pid
        self._reaped = False
        with _live_lock:
            _live.add(self)
        self._guest = Guest("127.0.0.1", port, dict(self.cfg.keys), host_key=self.cfg.host_key,
                            alive=self.alive, name=self.name)
        self._watcher = threading.Thread(target=self._watch, args=(child,), name=f"{self.name}-console",
                                         daemon=True)
        self._watcher.start()

    def _watch(self, child: Any) -> None:
        import pexpect  # type: ignore[import-untyped]

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = child.child_fd
        try:
            while True:
                try:
                    ready, _, _ = select.select([fd], [], [], 0.25)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
                with self._cond:
                    self._busy = True
                try:
                    with self._plock:
                        try:
                            data = child.read_nonblocking(65536, timeout=0)
                        except pexpect.TIMEOUT:
                            continue
                        except (pexpect.EOF, OSError, ValueError):
                            break
                    self._feed(decoder.decode(data))
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        except Exception:  # pragma: no cover - never let the console thread die silently
            log.exception("%s: console watcher failed", self.name)
        finally:
            self._feed(decoder.decode(b"", final=True), eof=True)
            self._exited.set()
            with self._cond:
                self._cond.notify_all()

    def _feed(self, text: str, eof: bool = False) -> None:
        with self._cond:
            parts = (self._partial + text).split("\n")
            self._partial = parts.pop()
            if eof and self._partial:
                parts.append(self._partial)
                self._partial = ""
            now = time.monotonic() - self._t0
            for raw in parts:
                line = normalize_line(raw)
                self._lines.append(line)
                new, event = self._scanner.feed(line)
                for name in new:
                    self._milestones[name] = now
                    log.debug("%s: %.2fs %s", self.name, now, name)
                if event is not None:
                    self._events.append(event)
                    log.warning("%s: console: %s", self.name, line.strip())
            self._cond.notify_all()

    def alive(self) -> bool:
        """Is QEMU running?"""
        if self._child is None or self._reaped:
            return False
        if self._exited.is_set():
            with self._plock:
                return bool(self._child.isalive()) if not self._reaped else False
        return True

    def wait_ready(self, timeout: float | None = None, login: bool = True) -> BootInfo:
        """Wait until sshd is up and root (or the first user) can log in.

        ``timeout`` counts from QEMU's start (default ``cfg.boot_timeout``).
        Raises :class:`BootError` (and stops the VM) on a panic, oops, BUG,
        init failure, QEMU exit or timeout.  ``login=False`` returns once
        sshd is up, without connecting (nothing of the harness in the guest
        yet: the moment to :meth:`save_state`).  A guest resumed from a saved
        state (``cfg.incoming``) has no boot to watch: it is ready when the
        login works.
        """
        if self._child is None:
            raise StageError(f"{self.name}: not started")
        try:
            if self.cfg.incoming is not None:
                return self._wait_resumed(timeout)
            return self._wait_ready(timeout, login)
        except BaseException:
            self.stop()
            raise

    def _wait_resumed(self, timeout: float | None) -> BootInfo:
        limit = self.cfg.boot_timeout if timeout is None else timeout
        user = self._login_user()
        for port_retries in range(3, -1, -1):
            deadline = self._t0 + limit
            try:
                self.ssh.wait_ready(deadline, poll=0.02, user=user)
                break
            except SSHGuestDown:
                if not (self._port_clash() and port_retries > 0):
                    self._check_boot(deadline, limit, after_ssh=True)
                    raise
                log.info("%s: port %s was taken, retrying on another", self.name, self.port)
                self._reap_child()
                self._spawn(free_port())
            except SSHTimeout as exc:
                self._login_failed(deadline, limit, "resumed guest:", exc)
        self._check_boot(deadline, limit, after_ssh=True)
        return self._ready_info()

    def _login_failed(self, deadline: float, limit: float, what: str, exc: SSHTimeout) -> None:
        """Raise the boot error that explains a login timeout (a crash first, if there was one)."""
        self._check_boot(deadline, limit, after_ssh=True)
        raise self._boot_error(f"{what} no SSH login within {limit:g}s: {exc}") from None

    def _login_user(self) -> str:
        user = "root" if "root" in self.cfg.keys else next(iter(self.cfg.keys), None)
        if user is None:
            raise InputError(f"{self.name}: no ssh keys configured (VMConfig.keys)")
        return user

    def _ready_info(self, login: bool = True) -> BootInfo:
        elapsed = time.monotonic() - self._t0
        with self._cond:
            milestones = dict(self._milestones)
            if login:
                milestones["ssh-login"] = elapsed
            events = tuple(self._event_objects())
        info = BootInfo(self.port or 0, elapsed, milestones, self.console_log, events,
                        resumed=self.cfg.incoming is not None)
        if login:
            self._ssh_ok = True
            self.boot_info = info
            log.info("%s: ready on 127.0.0.1:%s after %.2fs", self.name, self.port, elapsed)
        return info

    def _wait_ready(self, timeout: float | None, login: bool) -> BootInfo:
        limit = self.cfg.boot_timeout if timeout is None else timeout
        port_retries = 3
        while True:
            deadline = self._t0 + limit
            with self._cond:
                while True:
                    fatal = self._fatal()
                    if fatal is not None or self._exited.is_set():
                        break
                    if READY_MILESTONE in self._milestones:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 0.5))
            if self._port_clash() and port_retries > 0:
                port_retries -= 1
                log.info("%s: port %s was taken, retrying on another", self.name, self.port)
                self._reap_child()
                self._spawn(free_port())
                continue
            break
        self._check_boot(deadline, limit)
        if not login:
            return self._ready_info(login=False)
        user = self._login_user()
        try:
            self.ssh.wait_ready(deadline, poll=0.3, user=user)
        except SSHGuestDown:
            self._check_boot(deadline, limit, after_ssh=True)
            raise
        except SSHTimeout as exc:
            self._login_failed(deadline, limit, "sshd is up but", exc)
        self._check_boot(deadline, limit, after_ssh=True)
        return self._ready_info()

    def _port_clash(self) -> bool:
        if not (self._auto_port and self._exited.is_set()):
            return False
        with self._cond:
            text = "\n".join(self._lines[-20:])
        return "could not set up host forwarding rule" in text.lower()

    def _fatal(self) -> tuple[str, int, str] | None:
        return next((e for e in self._events if e[0] in FATAL_KINDS), None)

    def _check_boot(self, deadline: float, limit: float, after_ssh: bool = False) -> None:
        with self._cond:
            fatal = self._fatal()
            reached = [m for m in BOOT_MILESTONES if m in self._milestones]
            ready = READY_MILESTONE in self._milestones
        if fatal is not None:
            # let the rest of the report (call trace...) reach the console
            self._exited.wait(2.0)
            with self._cond:
                event = ConsoleEvent(fatal[0], fatal[2], fatal[1], _excerpt(self._lines, fatal[1]))
            raise self._boot_error(f"{event.kind}: {event.line.strip()}", event)
        if self._exited.is_set():
            status = self._reap_child()
            raise self._boot_error(
                f"QEMU exited (status {status}) after {time.monotonic() - self._t0:.1f}s; "
                f"milestones reached: {', '.join(reached) or 'none'}"
            )
        if not ready and not after_ssh:
            missing = next(m for m in BOOT_MILESTONES if m not in reached)
            raise self._boot_error(
                f"timed out after {limit:g}s waiting for {missing!r} "
                f"(reached: {', '.join(reached) or 'nothing'})"
            )

    def _boot_error(self, reason: str, event: ConsoleEvent | None = None) -> BootError:
        return BootError(self.name, reason, self.console_tail(40), self.console_log, event)

    def boot(self) -> BootInfo:
        """:meth:`start` then :meth:`wait_ready`."""
        self.start()
        return self.wait_ready()

    def save_state(self, dest: Path, timeout: float = 60.0) -> None:
        """Write the running guest's whole state (RAM, devices) to ``dest`` and stop QEMU.

        Needs ``cfg.qmp_socket``.  The file resumes with ``VMConfig(incoming=dest)``
        (same kernel, initramfs, memory and devices), in a fraction of a boot.
        ``dest`` appears only when complete.
        """
        from harness.machine.qmp import QMP, QMPError

        if self.cfg.qmp_socket is None:
            raise StageError(f"{self.name}: save_state needs a QMP socket (VMConfig.qmp_socket)")
        if self._child is None or self._exited.is_set():
            raise StageError(f"{self.name}: save_state: QEMU is not running")
        partial = dest.with_name(dest.name + ".part")
        deadline = time.monotonic() + timeout
        try:
            with QMP(self.cfg.qmp_socket, timeout=timeout) as qmp:
                # no "stop" first: a guest saved while running runs again when resumed
                # (QEMU's last pass copies it stopped, so the image is consistent)
                qmp.command("migrate", uri=f"exec:cat > {shlex.quote(str(partial))}")
                while True:
                    status = qmp.command("query-migrate").get("status")
                    if status == "completed":
                        break
                    if status in ("failed", "cancelled") or time.monotonic() > deadline:
                        raise QMPError(f"saving the guest state to {partial}: migration {status}")
                    time.sleep(0.01)
            os.replace(partial, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            self.stop(graceful=False)

    # -- SSH ----------------------------------------------------------------------

    @property
    def ssh(self) -> Guest:
        if self._guest is None:
            raise StageError(f"{self.name}: not started")
        return self._guest

    def run(self, cmd: str | Sequence[str], user: str = "root", timeout: float = 60,
            check: bool = False, input: str | bytes | None = None) -> CommandResult:
        return self.ssh.run(cmd, user=user, timeout=timeout, check=check, input=input)

    # -- console ------------------------------------------------------------------

    def sync_console(self, timeout: float = 1.0) -> bool:
        """Wait until the watcher has taken in all the console output QEMU has written.

        The kernel writes printk output to the serial port synchronously and
        QEMU passes each byte on to the console pty at once, so when a guest
        command has returned, what it made the kernel print is already in the
        pty: after this call it is in :meth:`events_since`.  False if the
        watcher did not catch up within ``timeout`` seconds.
        """
        child = self._child
        if child is None:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._exited.is_set():
                    return True
                if not self._busy and _pending(child.child_fd) == 0:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.01))

    def mark(self) -> int:
        """A position in the console (a line count) for :meth:`console_since`."""
        with self._cond:
            return len(self._lines)

    def console_since(self, mark: int = 0) -> str:
        with self._cond:
            tail = self._lines[mark:]
            partial = self._partial
        return "\n".join(tail + ([normalize_line(partial)] if partial else []))

    def console_tail(self, n: int = 40) -> str:
        with self._cond:
            lines = self._lines[-n:] + ([normalize_line(self._partial)] if self._partial else [])
        return "\n".join(lines[-n:])

    def _event_objects(self, since: int = 0) -> list[ConsoleEvent]:
        return [ConsoleEvent(k, line, n, _excerpt(self._lines, n))
                for k, n, line in self._events if n >= since]

    def events_since(self, mark: int = 0) -> list[ConsoleEvent]:
        """Kernel reports (any kind) printed since ``mark``."""
        with self._cond:
            return self._event_objects(mark)

    def milestones(self) -> dict[str, float]:
        with self._cond:
            return dict(self._milestones)

    def crash(self) -> ConsoleEvent | None:
        """The first panic, oops or BUG on the console, if any."""
        return next((e for e in self.events_since(0) if e.kind in CRASH_KINDS), None)

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
            if graceful and self._ssh_ok and not self._exited.is_set() and not self.crashed():
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
        if self._exited.wait(self.cfg.shutdown_timeout):
            log.debug("%s: guest rebooted, QEMU exited", self.name)

    def _signal(self, sig: int) -> None:
        with self._plock:
            if self._reaped or self._pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, sig)

    def _reap_child(self) -> int | None:
        """SIGTERM, then SIGKILL, then reap.  Always leaves no process behind."""
        child = self._child
        if child is None or self._reaped:
            return self._exitstatus
        try:
            if not self._exited.wait(0):
                self._signal(signal.SIGTERM)
                if not self._exited.wait(5.0):
                    self._signal(signal.SIGKILL)
                    self._exited.wait(5.0)
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
                status = child.exitstatus if child.exitstatus is not None else (
                    -child.signalstatus if child.signalstatus is not None else None)
                self._exitstatus = status
            with contextlib.suppress(Exception):
                if child.logfile_read is not None:
                    child.logfile_read.close()
            if self._watcher is not None and self._watcher is not threading.current_thread():
                self._watcher.join(timeout=2.0)
            with _live_lock:
                _live.discard(self)
        log.info("%s: QEMU (pid %s) stopped, status %s", self.name, self._pid, self._exitstatus)
        return self._exitstatus

    def kill(self) -> None:
        """Kill QEMU at once (atexit / SIGTERM): no SSH, no grace period."""
        if self._child is None or self._reaped or self._pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        try:
            os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass
        self._reaped = True
        with _live_lock:
            _live.discard(self)


def running_qemus(root: Path | None = None) -> list[str]:
    """Command lines of the QEMU processes started from this cache (for leak checks)."""
    result = proc.run(["pgrep", "-a", "-f", "qemu-system-i386"], check=False)
    needle = str(root or cache.root())
    return [line for line in result.stdout.splitlines() if needle in line]
