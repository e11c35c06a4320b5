"""How a guest is started: its configuration (:class:`VMConfig`) and the QEMU command line."""

from __future__ import annotations

import shlex
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import image
from harness.errors import InfraError, InputError

QEMU = "qemu-system-i386"
# 2.6.20 reboots after a panic only for panic=N with N > 0 (a negative value,
# "at once" in later kernels, makes it spin forever at 100% CPU); with
# -no-reboot the reboot makes QEMU exit, so a crashed guest goes away by itself.
BASE_APPEND = "console=ttyS0 rdinit=/init panic=1"
DEFAULT_BOOT_TIMEOUT = 60.0


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
    incoming: Path | None = None  # resume the guest saved in this file instead of booting
    extra_args: tuple[str, ...] = ()
    shutdown_timeout: float = 3.0  # for `reboot -f` over SSH before signalling QEMU
    cpus: int = 1  # >1: that many sockets of one core each, multi-threaded TCG (a CONFIG_SMP kernel)
    trace_log: Path | None = None  # TCG's in_asm log of the instructions in trace_ranges (coverage)
    trace_ranges: tuple[tuple[int, int], ...] = ()  # [start, end) guest address ranges to log

    @classmethod
    def for_image(cls, kernel: Path, img: image.Image, **kw: Any) -> VMConfig:
        """A config for ``kernel`` booting the guest image ``img`` (keys, host key, port)."""
        return cls(kernel=kernel, initramfs=img.initramfs, keys=dict(img.client_keys),
                   host_key=img.host_public_key, guest_ssh_port=img.ssh_port, **kw)

    def kernel_append(self) -> str:
        extra = self.append.strip()
        return f"{BASE_APPEND} {extra}" if extra else BASE_APPEND


def _no_commas(value: Path, what: str) -> str:
    text = str(value)
    if "," in text:
        raise InputError(f"{what} {text}: no commas allowed (QEMU option syntax)")
    return text


def qemu_argv(cfg: VMConfig, port: int, qmp_socket: Path | None = None) -> list[str]:
    """The QEMU command line; the SSH forward listens on 127.0.0.1:``port`` only.

    The guest's user network is ``restrict=on``: it reaches nothing outside
    (not the host's loopback services, not another VM's forwarded port);
    only the forwarded port reaches it.  With ``qmp_socket``, QEMU connects
    its monitor (QMP) to that unix socket, where the harness listens.
    """
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
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{cfg.guest_ssh_port}",
        # romfile= skips the iPXE option ROM: nothing boots from the network.
        "-device", f"{cfg.nic},netdev=n0,romfile=",
    ]
    if cfg.cpus > 1:
        # 2.6.20 reads the MP table, which lists one processor per socket: with
        # -smp N (one socket, N cores) it brings up a single CPU
        argv += ["-smp", f"{cfg.cpus},sockets={cfg.cpus},cores=1,threads=1"]
        if not cfg.kvm:
            # traced (coverage): one TCG thread; with -d in_asm, multi-threaded TCG of QEMU 7.2
            # hung every 2-vCPU boot after network-up (3 of 3; untraced: up in 6 s)
            traced = cfg.trace_log is not None and bool(cfg.trace_ranges)
            argv += ["-accel", "tcg,thread=single" if traced else "tcg,thread=multi"]
    if cfg.kvm:
        argv += ["-enable-kvm", "-cpu", "host"]
    if qmp_socket is not None:
        # QEMU is the client: it connects at start-up, so the harness knows at once
        argv += ["-chardev", f"socket,id=qmp,path={_no_commas(qmp_socket, 'QMP socket')}",
                 "-mon", "chardev=qmp,mode=control"]
    if cfg.incoming is not None:
        # QEMU runs exec: URIs with /bin/sh -c: the path is quoted
        argv += ["-incoming", f"exec:cat {shlex.quote(str(cfg.incoming))}"]
    if cfg.trace_log is not None and cfg.trace_ranges:
        ranges = ",".join(f"{start:#x}..{end - 1:#x}" for start, end in cfg.trace_ranges)
        argv += ["-d", "in_asm", "-dfilter", ranges, "-D", _no_commas(cfg.trace_log, "trace log")]
    argv += list(cfg.extra_args)
    return argv


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
    raise InfraError("no free TCP port found on 127.0.0.1")
