"""Saved boots on the real kernel: made once, resumed many times and at once, remade when damaged."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cache
from harness.kernel.source import Source
from harness.machine import snapshot
from harness.machine.vm import VM, VMConfig
from harness.run import target


@pytest.fixture(scope="module")
def prepared(kernel_source: Source) -> target.Prepared:
    return target.prepare(target.KernelSpec("default", "rcfs-fixes"))


@pytest.fixture
def cold(prepared: target.Prepared, tmp_path: Path) -> Iterator[VMConfig]:
    """A boot config whose snapshot this test makes itself (a kernel command line of its own)."""
    options = target.BootOptions(snapshot=False, append=f"harness.test={tmp_path.name}",
                                 console_dir=tmp_path)
    cfg = target.vm_config(prepared, options, "snaptest")
    yield cfg
    with cache.lock(f"snapshot-{snapshot.key(cfg)}"):
        cache.remove_tree(snapshot.root() / snapshot.key(cfg))


def _resumed(cfg: VMConfig, snap: snapshot.Snapshot, log: Path) -> VM:
    return VM(dataclasses.replace(snapshot.resume_config(cfg, snap), console_log=log), name=log.stem)


def test_made_once_then_resumed_twice_at_once_each_like_a_fresh_boot(cold: VMConfig, tmp_path: Path) -> None:
    assert snapshot.find(cold) is None
    snap = snapshot.ensure(cold, "snaptest")
    assert "HARNESS-MILESTONE: sshd-up" in snap.boot_console.read_text()
    assert list(snap.milestones)[-3:] == ["init-start", "network-up", "sshd-up"]
    meta = (snap.directory / "meta.json").stat().st_mtime_ns
    assert snapshot.ensure(cold, "snaptest") == snap
    assert (snap.directory / "meta.json").stat().st_mtime_ns == meta  # not made again
    with _resumed(cold, snap, tmp_path / "a.log") as a, _resumed(cold, snap, tmp_path / "b.log") as b:
        info_a, info_b = a.wait_ready(), b.wait_ready()
        assert info_a.resumed and info_b.resumed and a.port != b.port
        assert list(info_a.milestones) == ["ssh-login"]  # no boot happened in this QEMU
        for guest in (a, b):
            assert guest.run("uname -r", check=True).stdout == "2.6.20\n"
            assert f"harness.test={tmp_path.name}" in guest.run("cat /proc/cmdline").stdout
            # as after a boot: one listening dropbear plus the one serving this login
            procs = guest.run("ps -o comm", check=True).stdout.split()
            assert procs.count("dropbear") == 2, procs
        a.run("touch /tmp/only-in-a", check=True)
        assert b.run("test -e /tmp/only-in-a").exit_status == 1  # two guests, not one
        assert a.events_since(0) == [] and b.events_since(0) == []


def test_a_damaged_state_file_is_noticed_and_made_again(cold: VMConfig, tmp_path: Path) -> None:
    snap = snapshot.ensure(cold, "snaptest")
    size = snap.state.stat().st_size
    with snap.state.open("r+b") as f:
        f.truncate(size // 2)
    assert snapshot.find(cold) is None and not snap.directory.exists()
    again = snapshot.ensure(cold, "snaptest")
    assert again.state.stat().st_size == json.loads((again.directory / "meta.json").read_text())["size"]
    with _resumed(cold, again, tmp_path / "c.log") as c:
        c.wait_ready()
        assert c.run("true").exit_status == 0


def test_booted_resumes_by_default_and_boots_when_asked(prepared: target.Prepared) -> None:
    with target.booted(prepared) as resumed:
        assert resumed.boot_info is not None and resumed.boot_info.resumed
        assert resumed.run("cat /proc/filesystems").stdout.split().count("rcfs") == 1
    with target.booted(prepared, target.BootOptions(snapshot=False)) as booted:
        assert booted.boot_info is not None and not booted.boot_info.resumed
        assert "sshd-up" in booted.boot_info.milestones
