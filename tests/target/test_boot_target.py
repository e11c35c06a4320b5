"""Issue 3 on the real kernel: boot, SSH, `harness run`, boot failures, no QEMU left behind."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.kernel.source import Source
from harness.machine.vm import BootError, running_qemus
from harness.run import kept, target

HARNESS = [sys.executable, "-m", "harness"]


def _harness(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """``harness ARGS`` with an empty stdin (``harness run`` passes a file or pipe on to the guest)."""
    return subprocess.run([*HARNESS, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(autouse=True)
def no_qemu_left(kernel_source: Source) -> Iterator[None]:
    before = set(running_qemus())
    yield
    deadline = time.monotonic() + 10
    while (left := set(running_qemus()) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"QEMU processes left behind: {left}"


@pytest.fixture(scope="module")
def default_kernel(kernel_source: Source) -> target.Prepared:
    return target.prepare(target.KernelSpec("default", "rcfs"))


def test_default_boots_2_6_20_and_lists_rcfs(default_kernel: target.Prepared) -> None:
    with target.booted(default_kernel) as vm:
        assert vm.run("uname -r").stdout.strip() == "2.6.20"
        filesystems = vm.run("cat /proc/filesystems").stdout.split()
        assert "rcfs" in filesystems
        # resumed from the kernel's saved boot, whose console shows the real boot
        assert vm.boot_info is not None and vm.boot_info.resumed
        assert vm.cfg.incoming is not None
        assert "HARNESS-MILESTONE: sshd-up" in (vm.cfg.incoming.parent / "boot.console.log").read_text()


def test_norcfs_does_not_list_rcfs(kernel_source: Source) -> None:
    prepared = target.prepare(target.KernelSpec("norcfs", "rcfs"))
    with target.booted(prepared) as vm:
        filesystems = vm.run("cat /proc/filesystems").stdout.split()
        assert "proc" in filesystems and "rcfs" not in filesystems


def test_run_false_exits_1(default_kernel: target.Prepared) -> None:
    out = _harness("run", "--", "false")
    assert out.returncode == 1, out.stderr


def test_run_as_alice(default_kernel: target.Prepared) -> None:
    out = _harness("run", "--user", "alice", "--", "id", "-u")
    assert (out.returncode, out.stdout) == (0, "1000\n"), out.stderr


def test_run_passes_exit_status_and_streams(default_kernel: target.Prepared) -> None:
    out = _harness("run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (out.returncode, out.stdout, out.stderr.splitlines()[-1]) == (7, "out\n", "err")


def test_broken_init_is_a_boot_failure_not_a_timeout(default_kernel: target.Prepared) -> None:
    options = target.BootOptions(boot_timeout=600, append="rdinit=/etc/passwd", snapshot=False)
    with pytest.raises(BootError) as err, target.booted(default_kernel, options):
        pass
    assert err.value.event is not None and err.value.event.kind == "init-failed"
    assert "timed out" not in err.value.reason


def test_run_reports_vm_failure_with_exit_125(default_kernel: target.Prepared) -> None:
    # the guest goes away under the command: no status to pass through
    out = _harness("run", "--", "sh", "-c", "sleep 1; reboot -f; sleep 30", timeout=120)
    assert out.returncode == 125, out.stderr
    assert "harness: error:" in out.stderr


def test_ssh_port_listens_on_loopback_only(default_kernel: target.Prepared) -> None:
    with target.booted(default_kernel) as vm:
        assert vm.port is not None
        assert tcp_listeners(vm.port) == [f"127.0.0.1:{vm.port}"]


def tcp_listeners(port: int) -> list[str]:
    """The host's listening TCP sockets on ``port``, as ADDRESS:PORT, read from /proc/net/tcp{,6}
    (no tool needed: a minimal Debian has no ``ss``)."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, width // 2, 4))
            found.append(f"{ipaddress.ip_address(words)}:{port}")
    return found


def test_harness_ssh_quotes_its_words_and_pins_the_guest_host_key(default_kernel: target.Prepared,
                                                                   tmp_path: Path) -> None:
    """``harness ssh`` into a ``harness boot --keep`` VM: the guest's shell gets the words typed,
    never a string to evaluate; a guest that presents another host key is refused."""
    if kept.read() is not None:
        pytest.skip("a VM kept by `harness boot --keep` is running on this cache; stop it first")
    boot = subprocess.Popen([*HARNESS, "boot", "--keep"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while kept.read() is None:
            assert boot.poll() is None, f"harness boot --keep exited {boot.returncode}"
            assert time.monotonic() < deadline, "no kept VM after 300 s"
            time.sleep(0.2)
        out = _harness("ssh", "echo", "$(id -u)", "a;b", "'q'", timeout=60)
        assert (out.returncode, out.stdout) == (0, "$(id -u) a;b 'q'\n"), out.stderr

        pinned = kept.known_hosts_path().read_text()
        assert pinned.split()[1:] == default_kernel.image.host_public_key.split()[:2]
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                       check=True)
        other = (tmp_path / "other.pub").read_text().split()[:2]
        kept.known_hosts_path().write_text(f"{pinned.split()[0]} {' '.join(other)}\n")
        out = _harness("ssh", "true", timeout=60)
        assert out.returncode == 255 and "host key" in out.stderr.lower(), out.stderr
    finally:
        boot.terminate()
        try:
            boot.wait(timeout=30)
        except subprocess.TimeoutExpired:
            boot.kill()
            boot.wait()
    assert kept.read() is None, "the kept VM's record outlived harness boot --keep"
