"""harness.machine.vm: QEMU command line, console analysis on recorded logs, VM lifecycle.

The lifecycle tests without a kernel run a fake ``qemu`` (a shell script that
replays a recorded console); the ones marked ``target`` boot a real 2.6.20
kernel and skip, saying why, when none is available.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import cast

import paramiko
import pytest

from harness import cache, image
from harness.errors import InfraError, InputError, StageError, ToolMissing
from harness.machine import vm
from harness.machine.console_watch import SYNC_MARKER, ConsoleWatch
from harness.proc import PtyChild

DATA = Path(__file__).resolve().parent.parent / "data" / "console"
REPO = Path(__file__).resolve().parent.parent.parent


def _log(name: str) -> str:
    return vm.read_console(DATA / name)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie has exited
    except FileNotFoundError:
        return True


# =====================================================================================
# QEMU command line and ports


def _cfg(**kw: object) -> vm.VMConfig:
    base: dict[str, object] = {"kernel": Path("/k/bzImage"), "initramfs": Path("/k/initramfs.cpio.gz")}
    base.update(kw)
    return vm.VMConfig(**base)  # type: ignore[arg-type]


def test_qemu_argv_defaults_to_tcg_and_binds_localhost_only() -> None:
    argv = vm.qemu_argv(_cfg(), 4022)
    assert argv[0] == "qemu-system-i386"
    assert "-enable-kvm" not in argv and "-cpu" not in argv and "accel=kvm" not in " ".join(argv)
    for flag in ("-nographic", "-no-reboot"):
        assert flag in argv
    assert argv[argv.index("-m") + 1] == "256"
    assert argv[argv.index("-kernel") + 1] == "/k/bzImage"
    assert argv[argv.index("-initrd") + 1] == "/k/initramfs.cpio.gz"
    netdev = argv[argv.index("-netdev") + 1]
    # restrict=on: the guest reaches nothing outside, only the forward reaches it
    assert netdev == "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:4022-:22"
    forwards = re.findall(r"hostfwd=tcp:([^:]*):(\d+)-", " ".join(argv))
    assert forwards == [("127.0.0.1", "4022")]  # never 0.0.0.0 or an empty (all interfaces) address
    assert argv[argv.index("-device") + 1] == "rtl8139,netdev=n0,romfile="
    append = argv[argv.index("-append") + 1]
    assert append.split() == ["console=ttyS0", "rdinit=/init", "panic=1"]


def test_qemu_argv_kvm_is_opt_in() -> None:
    argv = vm.qemu_argv(_cfg(kvm=True), 4022)
    assert argv[-3:] == ["-enable-kvm", "-cpu", "host"]


def test_qemu_argv_extra_append_memory_and_args() -> None:
    argv = vm.qemu_argv(_cfg(append=" harness.shell  loglevel=8 ", memory_mb=128,
                             extra_args=("-smp", "1")), 5000)
    assert argv[argv.index("-append") + 1] == "console=ttyS0 rdinit=/init panic=1 harness.shell  loglevel=8"
    assert argv[argv.index("-m") + 1] == "128"
    assert argv[-2:] == ["-smp", "1"]


def test_qemu_argv_without_initramfs_and_bad_values() -> None:
    assert "-initrd" not in vm.qemu_argv(_cfg(initramfs=None), 5000)
    with pytest.raises(InputError):
        vm.qemu_argv(_cfg(append="a\nb"), 5000)
    with pytest.raises(InputError):
        vm.qemu_argv(_cfg(), 0)
    with pytest.raises(InputError):
        vm.qemu_argv(_cfg(), 70000)


def test_for_image_takes_keys_host_key_and_port(tmp_path: Path) -> None:
    img = image.Image(recipe_name="default", recipe_hash="x", directory=tmp_path,
                      initramfs=tmp_path / "initramfs.cpio.gz",
                      client_keys={"root": tmp_path / "root", "alice": tmp_path / "alice"},
                      host_key_fingerprint="SHA256:x", host_public_key="ssh-ed25519 AAAA", ssh_port=2222)
    cfg = vm.VMConfig.for_image(Path("/k/bzImage"), img, boot_timeout=5)
    assert cfg.initramfs == img.initramfs and dict(cfg.keys) == img.client_keys
    assert cfg.host_key == "ssh-ed25519 AAAA" and cfg.boot_timeout == 5
    assert vm.qemu_argv(cfg, 4000)[vm.qemu_argv(cfg, 4000).index("-netdev") + 1].endswith("4000-:2222")


def test_free_port_is_free_on_localhost_and_not_repeated() -> None:
    ports = [vm.free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # really free


def test_default_boot_timeout_is_generous_for_tcg() -> None:
    assert _cfg().boot_timeout >= 60
    assert not _cfg().kvm


# =====================================================================================
# scan_console on recorded logs


BOOT = ["kernel", "userspace", "init-start", "network-up", "sshd-up"]


@pytest.mark.parametrize("name", ["clean-boot-vm.log", "clean-boot-debug.log", "clean-boot.log"])
def test_clean_boots(name: str) -> None:
    v = vm.scan_console(_log(name))
    assert list(v.milestones)[:5] == BOOT
    assert v.events == () and v.first_event is None and v.fatal is None
    assert v.booted and v.clean


def test_clean_boot_with_shutdown_milestone() -> None:
    v = vm.scan_console(_log("clean-boot.log"))  # recorded by the image stage: QEMU stdout to a file
    assert list(v.milestones) == [*BOOT, "shutdown"]


def test_panic_without_initramfs() -> None:
    v = vm.scan_console(_log("panic-no-initramfs.log"))
    assert list(v.milestones) == ["kernel"]
    assert v.fatal is not None and v.fatal.kind == "panic"
    assert "VFS: Unable to mount root fs" in v.fatal.line
    assert "No filesystem could mount root" in v.fatal.excerpt
    assert not v.booted and v.crash is v.fatal


def test_panic_when_init_exits() -> None:
    v = vm.scan_console(_log("panic-init-exits.log"))
    assert list(v.milestones) == ["kernel", "userspace"]
    assert v.fatal is not None and v.fatal.kind == "panic"
    assert v.fatal.line.strip() == "Kernel panic - not syncing: Attempted to kill init!"
    assert "init: exiting on purpose" in v.fatal.excerpt


def test_init_that_cannot_be_executed() -> None:
    v = vm.scan_console(_log("init-exec-failed.log"))
    kinds = [e.kind for e in v.events]
    assert kinds == ["init-failed", "panic"]
    assert v.fatal is not None and v.fatal.line.strip() == "Failed to execute /init"
    assert "No init found" in v.fatal.excerpt
    assert v.crash is not None and v.crash.kind == "panic"


def test_init_reporting_failure_on_the_console() -> None:
    v = vm.scan_console(_log("init-failed-no-sshd.log"))
    assert list(v.milestones) == ["kernel", "userspace", "init-start", "network-up"]
    assert v.fatal is not None and v.fatal.kind == "init-failed"
    assert v.fatal.line.startswith(image.MILESTONE_FAILED)
    assert "dropbear is not listening" in v.fatal.line
    assert v.crash is None


def test_oops_after_boot() -> None:
    v = vm.scan_console(_log("oops-null-syscall.log"))
    assert list(v.milestones) == BOOT
    assert len(v.events) == 1  # "unable to handle..." and "Oops: 0000 [#1]" are one report
    e = v.events[0]
    assert e.kind == "oops" and v.fatal is e and v.crash is e
    assert "NULL pointer dereference at virtual address 00000000" in e.line
    for part in ("Oops: 0000 [#1]", "Process sync (pid:", "Call Trace:", "sysenter_past_esp"):
        assert part in e.excerpt
    assert "\r" not in e.excerpt and "\x1b" not in e.excerpt
    assert str(e).startswith("oops: BUG: unable to handle kernel NULL pointer")


def test_two_oopses_are_two_events() -> None:
    v = vm.scan_console(_log("oops-twice.log"))
    assert "shutdown" in v.milestones
    oopses = v.of_kind("oops")
    assert len(oopses) == 2  # init's shutdown path: `sync`, then `reboot -f` (which syncs)
    assert "Process sync" in oopses[0].excerpt and "Oops: 0000 [#1]" in oopses[0].excerpt
    assert oopses[1].line.startswith("<1>BUG: unable to handle kernel")
    assert "Process reboot" in oopses[1].excerpt and "Oops: 0000 [#2]" in oopses[1].excerpt
    assert oopses[0].lineno < oopses[1].lineno


def test_panic_on_oops_after_boot() -> None:
    v = vm.scan_console(_log("panic-on-oops-after-boot.log"))
    assert v.booted
    assert [e.kind for e in v.events] == ["oops", "panic"]
    assert "Fatal exception" in v.events[1].line


def test_lockdep_recursive_locking() -> None:
    v = vm.scan_console(_log("lockdep-recursive-epoll.log"))
    assert list(v.milestones) == BOOT
    assert len(v.events) == 1
    e = v.events[0]
    assert e.kind == "lockdep" and e.line.strip() == "[ INFO: possible recursive locking detected ]"
    assert v.first_event is e and v.fatal is None and v.crash is None  # a report, not a crash
    assert not v.clean
    for part in ("nestep/", "is trying to acquire lock", "ep_poll_callback", "stack backtrace:"):
        assert part in e.excerpt
    assert e.excerpt.splitlines()[1].startswith("=====")  # the report's header is in the excerpt


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("Kernel panic - not syncing: Fatal exception in interrupt", "panic"),
        ("<0>Kernel panic - not syncing: Attempted to kill init!", "panic"),
        ("[   12.345678] Kernel panic - not syncing: VFS: Unable to mount root fs", "panic"),
        ("Oops: 0002 [#1]", "oops"),
        ("general protection fault: 0000 [#1]", "oops"),
        ("invalid opcode: 0000 [#1]", "oops"),
        ("Unable to handle kernel paging request at virtual address 6b6b6b6b", "oops"),
        ("BUG: unable to handle kernel NULL pointer dereference at virtual address 00000000", "oops"),
        ("kernel BUG at mm/slab.c:2912!", "bug"),
        ("BUG: scheduling while atomic: swapper/0x00000100/0", "bug"),
        ("BUG: spinlock lockup on CPU#0, rcfs/123, c0345678", "bug"),
        ("BUG: soft lockup detected on CPU#0!", "bug"),
        ("BUG: sleeping function called from invalid context at mm/slab.c:3034", "bug"),
        ("BUG: at kernel/rcfs.c:123 rcfs_attach()", "warning"),  # WARN_ON() in 2.6.20
        ("WARNING: at kernel/rcfs.c:123 rcfs_attach()", "warning"),
        ("WARNING at fs/sysfs/dir.c:424 sysfs_add_one()", "warning"),
        ("[ INFO: possible recursive locking detected ]", "lockdep"),
        ("[ INFO: inconsistent lock state ]", "lockdep"),
        ("[ INFO: possible circular locking dependency detected ]", "lockdep"),
        ("[ INFO: possible irq lock inversion dependency detected ]", "lockdep"),
        ("[ INFO: hardirq-safe -> hardirq-unsafe lock order detected ]", "lockdep"),
        ("[ BUG: bad unlock balance detected! ]", "lockdep"),
        ("[ BUG: lock held at task exit time! ]", "lockdep"),
        ("WARNING: possible recursive locking detected", "lockdep"),
        ("INFO: trying to register non-static key.", "lockdep"),
        ("HARNESS-MILESTONE: init-failed mount proc", "init-failed"),
        ("Failed to execute /sbin/init.  Attempting defaults...", "init-failed"),
        ("Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar", None),
        ("... MAX_LOCKDEP_SUBCLASSES:    8", None),
        ("Freeing unused kernel memory: 140k freed", None),
        ("HARNESS-MILESTONE: sshd-up", None),
        ("e1000: eth0: e1000_watchdog: NIC Link is Up 1000 Mbps Full Duplex", None),
        ("Debug: sleeping function called", None),
    ],
)
def test_classify_line(line: str, kind: str | None) -> None:
    assert vm.classify_line(line) == kind


def test_bug_then_its_oops_is_one_report() -> None:
    text = "\n".join([
        "------------[ cut here ]------------",
        "kernel BUG at kernel/rcfs.c:42!",
        "invalid opcode: 0000 [#1]",
        "EIP is at rcfs_rmdir+0x12/0x40",
        "Call Trace:",
        " [<c0100000>] vfs_rmdir+0x1/0x2",
    ])
    v = vm.scan_console(text)
    assert [e.kind for e in v.events] == ["bug"]
    assert "rcfs_rmdir" in v.events[0].excerpt


def test_scan_console_handles_raw_terminal_output() -> None:
    raw = ("\x1bc\x1b[?7l\x1b[2JBooting from ROM..Linux version 2.6.20 (x)\r\r\n"
           "Kernel panic - not syncing: x\r\r\n")
    v = vm.scan_console(raw)
    assert v.milestones == {"kernel": 0}
    assert v.fatal is not None and v.fatal.line == "Kernel panic - not syncing: x"


# =====================================================================================
# VM lifecycle with a fake QEMU (no kernel needed)

FAKE_QEMU = textwrap.dedent("""\
    #!/bin/sh
    # A stand-in for qemu-system-i386: prints the "kernel" file (a recorded
    # console), then runs or exits as the kernel command line says.
    while [ $# -gt 0 ]; do
        case "$1" in
            -kernel) kernel=$2; shift ;;
            -append) append=$2; shift ;;
        esac
        shift
    done
    cat "$kernel"
    case "$append" in
        *fake.exit*) exit 3 ;;
        *fake.more*)  # print "$kernel.more" once "$kernel.go" exists, then say so in "$kernel.done"
            while [ ! -e "$kernel.go" ]; do sleep 0.02; done
            cat "$kernel.more"
            touch "$kernel.done" ;;
    esac
    exec sleep 600
""")


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Path:
    path = tmp_path / "qemu-system-i386"
    path.write_text(FAKE_QEMU)
    path.chmod(0o755)
    return path


def _fake_cfg(tmp_path: Path, fake_qemu: Path, console: str, **kw: object) -> vm.VMConfig:
    kernel = tmp_path / "console.txt"
    kernel.write_bytes(console.encode())
    base: dict[str, object] = {"kernel": kernel, "initramfs": None, "qemu": str(fake_qemu),
                               "console_log": tmp_path / "console.log", "boot_timeout": 20}
    base.update(kw)
    return vm.VMConfig(**base)  # type: ignore[arg-type]


def _cut(log: str, marker: str) -> str:
    """A recorded log up to (not including) the first line with ``marker``."""
    return log[: log.index(marker)]


def test_panic_during_boot_fails_fast_and_reaps_qemu(tmp_path: Path, fake_qemu: Path) -> None:
    # a long boot timeout: the panic, not the timeout, ends the wait
    cfg = _fake_cfg(tmp_path, fake_qemu, _log("panic-no-initramfs.log"), boot_timeout=600)
    with vm.VM(cfg, name="fake") as v:
        pid = v._pid
        assert pid is not None
        with pytest.raises(vm.BootError) as info:
            v.wait_ready()
        assert not v.alive()
    err = info.value
    assert isinstance(err, StageError) and not isinstance(err, InfraError)
    assert err.event is not None and err.event.kind == "panic"
    assert "panic: Kernel panic - not syncing: VFS: Unable to mount root fs" in str(err)
    assert "VFS: Unable to mount root fs" in err.console_tail
    assert len(err.console_tail.splitlines()) <= 40
    assert err.console_log == tmp_path / "console.log"
    assert "Kernel panic" in vm.read_console(tmp_path / "console.log")  # teed
    assert _gone(pid)
    assert v not in vm.live_vms()


def test_init_failure_is_a_boot_error(tmp_path: Path, fake_qemu: Path) -> None:
    cfg = _fake_cfg(tmp_path, fake_qemu, _log("init-exec-failed.log"))
    with vm.VM(cfg) as v, pytest.raises(vm.BootError, match="init-failed: Failed to execute /init"):
        v.wait_ready()


def test_qemu_exit_is_a_boot_error(tmp_path: Path, fake_qemu: Path) -> None:
    early = _cut(_log("clean-boot-vm.log"), "Freeing unused")
    cfg = _fake_cfg(tmp_path, fake_qemu, early, append="fake.exit")
    with vm.VM(cfg) as v:
        with pytest.raises(vm.BootError, match=r"QEMU exited \(status 3\).*milestones reached: kernel"):
            v.wait_ready()
        assert not v.alive()
        assert v.stop() == 3


def test_boot_timeout(tmp_path: Path, fake_qemu: Path) -> None:
    cfg = _fake_cfg(tmp_path, fake_qemu, _cut(_log("clean-boot-vm.log"), "Freeing unused"), boot_timeout=1.5)
    with vm.VM(cfg) as v:
        pid = v.pid
        with pytest.raises(vm.BootError, match="timed out after 1.5s waiting for 'userspace'"):
            v.wait_ready()
    assert pid is not None and _gone(pid)


def test_no_ssh_login_after_sshd_up(tmp_path: Path, fake_qemu: Path) -> None:
    key = tmp_path / "key"
    paramiko.RSAKey.generate(1024).write_private_key_file(str(key))
    cfg = _fake_cfg(tmp_path, fake_qemu, _log("clean-boot-vm.log"), boot_timeout=2, keys={"root": key})
    with vm.VM(cfg) as v:
        with pytest.raises(vm.BootError, match="sshd is up but no SSH login"):
            v.wait_ready()
        assert list(v.milestones()) == BOOT


def test_console_reading_and_crash_detection(tmp_path: Path, fake_qemu: Path) -> None:
    cfg = _fake_cfg(tmp_path, fake_qemu, _log("oops-null-syscall.log"), boot_timeout=2)
    with vm.VM(cfg) as v:
        deadline = time.monotonic() + 10
        while not v.crashed() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert v.crashed() and v.alive()
        crash = v.crash()
        assert crash is not None and crash.kind == "oops"
        assert "Process sync" in crash.excerpt
        assert list(v.milestones()) == BOOT
        tail = v.console_tail(5).splitlines()
        assert len(tail) == 5 and tail[-2].startswith("EIP: [<00000000>]")
        assert "terminating on signal 15" in tail[-1]  # the recording ends with QEMU's last words
        mark = crash.lineno
        assert v.console_since(mark).startswith("BUG: unable to handle kernel")
        assert [e.kind for e in v.events_since(mark)] == ["oops"]
        assert v.events_since(mark + 1) == []
        assert v.verdict().crash is not None
        assert v.mark() > mark


def test_sync_console_waits_for_output_the_watcher_has_not_read(tmp_path: Path, fake_qemu: Path) -> None:
    cfg = _fake_cfg(tmp_path, fake_qemu, "first\n", append="fake.more")
    kernel = Path(cfg.kernel)
    # less than a pty buffer: the "kernel" must not block while the watcher cannot read
    more = [f"line {i}" for i in range(200)] + ["WARNING: at kernel/rcfs.c:1 rcfs_test()"]
    Path(f"{kernel}.more").write_text("\n".join(more) + "\n")
    with vm.VM(cfg) as v:
        deadline = time.monotonic() + 10
        while "first" not in v.console_since(0) and time.monotonic() < deadline:
            time.sleep(0.01)
        mark = v.mark()
        with v._plock:  # the watcher cannot read while the "kernel" prints
            Path(f"{kernel}.go").touch()
            while not Path(f"{kernel}.done").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        assert v.sync_console(timeout=10)
        assert v.console_since(mark).splitlines()[-1] == more[-1]
        assert [e.kind for e in v.events_since(mark)] == ["warning"]


def _booted(v: vm.VM) -> bool:
    return "Linux version 2.6.20" in v.console_since(0)


def test_several_vms_have_distinct_ports_and_logs(tmp_path: Path, fake_qemu: Path) -> None:
    cfg = _fake_cfg(tmp_path, fake_qemu, _log("clean-boot-vm.log"))
    a = vm.VM(dataclasses.replace(cfg, console_log=None), name="a")
    b = vm.VM(dataclasses.replace(cfg, console_log=None), name="b")
    with a, b:
        assert a.port != b.port and a.console_log != b.console_log
        assert a.console_log.parent == cache.root() / "vm"
        assert {a, b} <= set(vm.live_vms())
        pids = [a._pid, b._pid]
        for v in (a, b):  # the fake prints its boot when it gets to it: wait for that, not for luck
            assert v.watch.wait_for(functools.partial(_booted, v), time.monotonic() + 60)
    assert all(p is not None and _gone(p) for p in pids)
    assert "Linux version 2.6.20" in vm.read_console(a.console_log)


def test_stop_is_idempotent_and_reaps(tmp_path: Path, fake_qemu: Path) -> None:
    v = vm.VM(_fake_cfg(tmp_path, fake_qemu, "hello\n")).start()
    pid = v._pid
    assert pid is not None and v.alive()
    status = v.stop()
    assert status == -signal.SIGTERM
    assert v.stop() == status and not v.alive() and _gone(pid)


def test_ctrl_c_inside_the_with_block_reaps_qemu(tmp_path: Path, fake_qemu: Path) -> None:
    pid = None
    with pytest.raises(KeyboardInterrupt), vm.VM(_fake_cfg(tmp_path, fake_qemu, "hello\n")) as v:
        pid = v._pid
        raise KeyboardInterrupt
    assert pid is not None and _gone(pid)


def test_missing_files_are_input_errors(tmp_path: Path, fake_qemu: Path) -> None:
    cfg = _fake_cfg(tmp_path, fake_qemu, "x")
    with pytest.raises(InputError, match="initramfs"):
        vm.VM(dataclasses.replace(cfg, initramfs=tmp_path / "nope")).start()
    with pytest.raises(ToolMissing, match="command not found"):
        vm.VM(dataclasses.replace(cfg, qemu="no-such-qemu-binary")).start()


_CHILD = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from harness.machine import vm
    cfg = vm.VMConfig(kernel=Path(sys.argv[1]), initramfs=None, qemu=sys.argv[2],
                      console_log=Path(sys.argv[3]))
    v = vm.VM(cfg).start()
    print(v._pid, flush=True)
    if sys.argv[4] == "exit":
        sys.exit(0)          # no stop(): atexit must reap QEMU
    time.sleep(60)           # SIGTERM arrives here
""")


@pytest.mark.parametrize("how", ["sigterm", "exit"])
def test_no_orphan_after_sigterm_or_interpreter_exit(tmp_path: Path, fake_qemu: Path, how: str) -> None:
    kernel = tmp_path / "console.txt"
    kernel.write_text("hello\n")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(kernel), str(fake_qemu), str(tmp_path / "c.log"), how],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        qemu_pid = int(child.stdout.readline())
        if how == "sigterm":
            time.sleep(0.3)
            child.send_signal(signal.SIGTERM)
        rc = child.wait(timeout=20)
        assert rc == (-signal.SIGTERM if how == "sigterm" else 0)
        deadline = time.monotonic() + 5
        while not _gone(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(qemu_pid)
    finally:
        child.kill()
        child.wait()


def test_a_sync_marker_is_taken_in_but_never_kept_as_a_console_line() -> None:
    """VM.sync_console has the guest print a numbered marker after everything before it: the watcher
    notes the newest number and keeps the console as the guest printed it otherwise."""
    watch = ConsoleWatch(cast(PtyChild, None), "t", threading.RLock())
    watch.feed("WARNING: at kernel/rcfs.c:1 probe()\n")
    assert not watch.wait_synced(1, time.monotonic())  # not seen yet: no waiting past the deadline
    watch.feed(f"{SYNC_MARKER} 1\r\nlater\n")
    assert watch.wait_synced(1, time.monotonic()) and not watch.wait_synced(2, time.monotonic())
    assert watch.since(0).splitlines() == ["WARNING: at kernel/rcfs.c:1 probe()", "later"]
    assert [e.kind for e in watch.events_since(0)] == ["warning"]
