"""The VM on a real 2.6.20 kernel: boot, resume, SSH users and files, console, isolation, crashes."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.kernel.source import Source
from harness.machine import snapshot, ssh, vm
from harness.machine.console import BOOT_MILESTONES
from harness.run import target


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def prepared(kernel_source: Source) -> target.Prepared:
    return target.prepare(target.KernelSpec("default", "rcfs"))


def _cfg(prepared: target.Prepared, tmp_path: Path, name: str = "console.log", **kw: object) -> vm.VMConfig:
    return vm.VMConfig.for_image(prepared.build.bzimage, prepared.image,
                                 console_log=tmp_path / name, **kw)


@pytest.fixture
def real_vm(prepared: target.Prepared, tmp_path: Path) -> Iterator[vm.VM]:
    with vm.VM(_cfg(prepared, tmp_path)) as v:
        yield v


def test_real_boot_ssh_users_files_and_clean_stop(real_vm: vm.VM) -> None:
    info = real_vm.wait_ready()
    assert list(info.milestones) == [*BOOT_MILESTONES, "ssh-login"]
    assert info.events == ()
    assert real_vm.run("uname -r", check=True).stdout.startswith("2.6.20")
    assert real_vm.run("id -u", user="alice").stdout == "1000\n"
    assert real_vm.run(["id", "-un"], user="bob").stdout == "bob\n"
    blob = bytes(range(256)) * 600
    real_vm.ssh.put(blob, "/tmp/blob", user="alice")
    assert real_vm.ssh.get("/tmp/blob", user="alice") == blob
    assert real_vm.run("ls -ln /tmp/blob", user="alice").stdout.split()[2] == "1000"
    assert real_vm.run("exit 7").exit_status == 7
    # in the user's shell a signal is a status, as a shell says; on an exec channel it has its name
    assert real_vm.run("kill -SEGV $$").exit_status == 139
    r = real_vm.run("kill -SEGV $$", fresh=True)
    assert (r.exit_status, r.signal) == (139, "SEGV")
    with pytest.raises(ssh.SSHTimeout):
        real_vm.run("sleep 30", timeout=1)
    assert real_vm.run("echo after timeout").stdout == "after timeout\n"
    # the timed-out sleep was killed, the shell kept
    assert "sleep 30" not in real_vm.run("ps", check=True).stdout
    assert not real_vm.crashed()
    pid = real_vm.pid
    assert real_vm.stop() == 0  # `reboot -f` with -no-reboot: QEMU exits by itself
    assert pid is not None and _gone(pid)


def test_commands_in_the_shell_run_as_an_exec_would(real_vm: vm.VM) -> None:
    """``$$`` is the command's own process, stdin is empty, nothing is left set for the next one."""
    real_vm.wait_ready()
    pids = {real_vm.run("echo $$", check=True).stdout for _ in range(3)}
    assert len(pids) == 3
    assert real_vm.run("cat", check=True).stdout == ""
    real_vm.run("cd /tmp; X=1; export Y=2", check=True)
    assert real_vm.run('pwd; echo "[$X][$Y]"', check=True).stdout == "/root\n[][]\n"
    assert real_vm.run("exec false").exit_status == 1
    assert real_vm.run("echo still", check=True).stdout == "still\n"
    assert real_vm.run("printf 'a\\000b\\377'", check=True).stdout_bytes == b"a\x00b\xff"


def test_real_two_vms_at_once(prepared: target.Prepared, tmp_path: Path) -> None:
    a = vm.VM(_cfg(prepared, tmp_path, "a.log"), name="a")
    b = vm.VM(_cfg(prepared, tmp_path, "b.log"), name="b")
    with a, b:
        a.wait_ready()
        b.wait_ready()
        assert a.port != b.port
        a.run("echo a > /tmp/who", check=True)
        assert b.run("cat /tmp/who 2>/dev/null || echo none").stdout == "none\n"
    assert a.pid is not None and b.pid is not None and _gone(a.pid) and _gone(b.pid)


def test_the_guest_cannot_reach_the_hosts_loopback(real_vm: vm.VM) -> None:
    """QEMU's user network is restrict=on: 10.0.2.2 (the host) reaches nothing, not even
    a listener on the host's 127.0.0.1 or another VM's forwarded SSH port."""
    real_vm.wait_ready()
    assert real_vm.run("command -v nc").ok, "the guest image needs busybox nc for this test"
    connected = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                connected.set()
                conn.close()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            r = real_vm.run(f"echo hello | nc -w 2 10.0.2.2 {port}; echo status $?", timeout=30)
        finally:
            stop.set()
            thread.join(5)
    assert "status 0" not in r.stdout, r.stdout + r.stderr
    assert not connected.is_set()


def test_a_resumed_vm_is_ready_on_qemus_signal(prepared: target.Prepared, tmp_path: Path) -> None:
    """The login of a resumed VM comes after QEMU's RESUME event: one SSH attempt, no polling."""
    cfg = _cfg(prepared, tmp_path)
    snap = snapshot.ensure(cfg, "resume-test")
    resumed = snapshot.resume_config(cfg, snap)
    with vm.VM(resumed) as v:
        info = v.wait_ready()
        assert info.resumed
        assert v.ssh.connection("root") is not None
        assert v.run("cat /proc/uptime", check=True).ok
    # a state that arrives late (a FIFO written after a pause): the login still waits for RESUME
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        time.sleep(1.0)
        with fifo.open("wb") as out:
            out.write(snap.state.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with vm.VM(dataclasses.replace(resumed, incoming=fifo)) as v:
        info = v.wait_ready()
        assert info.resumed
        assert v.run("echo up", check=True).stdout == "up\n"
    writer.join(10)


def test_real_broken_init_is_reported(prepared: target.Prepared, tmp_path: Path) -> None:
    # a file that exists (else 2.6.20 ignores rdinit=) but cannot be executed
    cfg = _cfg(prepared, tmp_path, append="rdinit=/etc/passwd", boot_timeout=600)
    with vm.VM(cfg) as v, pytest.raises(vm.BootError) as info:
        v.wait_ready()
    # the init failure, not the (long) timeout, ended the wait
    assert info.value.event is not None and info.value.event.kind == "init-failed"
    assert "Failed to execute /etc/passwd" in str(info.value)
    assert v.pid is not None and _gone(v.pid)


def test_real_sync_console_has_what_a_command_printed(real_vm: vm.VM) -> None:
    """Each printk a command caused is an event as soon as sync_console returns."""
    real_vm.wait_ready()
    for i in range(10):
        mark = real_vm.mark()
        # a burst of console lines first, so the watcher has work left when the command returns
        real_vm.run(f"i=0; while [ $i -lt 100 ]; do echo filler $i; i=$((i+1)); done > /dev/kmsg; "
                    f"echo 'WARNING: at harness/sync.c:{i} probe()' > /dev/kmsg", check=True)
        assert real_vm.sync_console()
        assert [e.line.split("sync.c:")[-1] for e in real_vm.events_since(mark)] == [f"{i} probe()"]


def test_real_oops_after_boot_is_seen(prepared: target.Prepared, tmp_path: Path) -> None:
    smap = prepared.build.system_map
    table = next(int(line.split()[0], 16) for line in smap.read_text().splitlines()
                 if line.endswith(" sys_call_table"))
    with vm.VM(_cfg(prepared, tmp_path)) as v:
        v.wait_ready()
        mark = v.mark()
        # zero sys_call_table[36] (sync) through /dev/kmem, then call it
        v.run(f"mknod /dev/kmem c 1 2 && printf '\\000\\000\\000\\000' | "
              f"dd of=/dev/kmem bs=1 seek={table + 36 * 4} count=4 conv=notrunc", check=True)
        r = v.run("sync")
        assert r.exit_status == 139
        assert v.sync_console()  # no polling: the oops is in once the command has returned
        crash = v.crash()
        assert crash is not None and crash.kind == "oops"
        assert [e.kind for e in v.events_since(mark)] == ["oops"]
        assert v.alive() and v.run("echo still here").stdout == "still here\n"
