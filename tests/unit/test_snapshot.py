"""Saved guest states without a kernel: what the key depends on, damage detection, QEMU options."""

from __future__ import annotations

import dataclasses
import json
import shlex
import threading
from pathlib import Path

import pytest

from harness import cache
from harness.errors import InputError, StageError
from harness.machine import snapshot, vm


@pytest.fixture
def cfg(tmp_path: Path) -> vm.VMConfig:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"kernel one")
    initramfs = tmp_path / "initramfs.cpio.gz"
    initramfs.write_bytes(b"initramfs one")
    qemu = tmp_path / "qemu-system-i386"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.0 (fake)'\n")
    qemu.chmod(0o755)
    return vm.VMConfig(kernel=kernel, initramfs=initramfs, qemu=str(qemu), host_key="ssh-ed25519 AAAA")


def test_key_is_stable_and_follows_everything_the_state_depends_on(cfg: vm.VMConfig, tmp_path: Path) -> None:
    base = snapshot.key(cfg)
    assert snapshot.key(dataclasses.replace(cfg)) == base
    # a different console log, port or boot timeout does not change what is saved
    assert snapshot.key(dataclasses.replace(cfg, console_log=tmp_path / "c.log", ssh_port=2222,
                                            boot_timeout=5)) == base
    other_kernel = tmp_path / "other"
    other_kernel.write_bytes(b"kernel two")
    changed = [
        dataclasses.replace(cfg, kernel=other_kernel),
        dataclasses.replace(cfg, memory_mb=128),
        dataclasses.replace(cfg, append="lockdep"),
        dataclasses.replace(cfg, nic="e1000"),
        dataclasses.replace(cfg, extra_args=("-smp", "2")),
        dataclasses.replace(cfg, host_key="ssh-ed25519 BBBB"),
    ]
    keys = {snapshot.key(c) for c in changed}
    assert base not in keys and len(keys) == len(changed)


def test_key_follows_the_kernel_contents_not_its_name(cfg: vm.VMConfig) -> None:
    base = snapshot.key(cfg)
    cfg.kernel.write_bytes(b"kernel rebuilt")
    assert snapshot.key(cfg) != base


def _fake_snapshot(cfg: vm.VMConfig, state: bytes = b"state bytes") -> Path:
    directory = snapshot.root() / snapshot.key(cfg)
    directory.mkdir(parents=True)
    (directory / snapshot.STATE).write_bytes(state)
    meta = {"format": snapshot.FORMAT, "key": snapshot.key(cfg), "size": len(state),
            "sha256": cache.file_sha256(directory / "state"),
            "boot_seconds": 0.9, "milestones": {"sshd-up": 0.9}, "kernel": str(cfg.kernel),
            "kernel_sha256": cache.file_sha256(cfg.kernel)}
    (directory / snapshot.META).write_text(json.dumps(meta))
    return directory


def test_find_returns_a_sound_snapshot(cfg: vm.VMConfig) -> None:
    assert snapshot.find(cfg) is None
    directory = _fake_snapshot(cfg)
    found = snapshot.find(cfg)
    assert found is not None and found.directory == directory and found.state == directory / "state"
    assert found.milestones == {"sshd-up": 0.9}
    resumed = snapshot.resume_config(cfg, found)
    assert resumed.incoming == found.state and resumed.kernel == cfg.kernel


@pytest.mark.parametrize("damage", ["truncated", "same size, other bytes", "no meta", "other format",
                                    "meta is a list", "meta without sha256", "another key",
                                    "meta not JSON"])
def test_a_damaged_snapshot_is_moved_aside(cfg: vm.VMConfig, damage: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    directory = _fake_snapshot(cfg)
    state, meta = directory / "state", directory / "meta.json"
    good = json.loads(meta.read_text())
    if damage == "truncated":
        state.write_bytes(b"state")
    elif damage == "same size, other bytes":
        state.write_bytes(b"STATE BYTES")
    elif damage == "no meta":
        meta.unlink()
    elif damage == "other format":
        meta.write_text(json.dumps({**good, "format": "0"}))
    elif damage == "meta is a list":
        meta.write_text("[]")
    elif damage == "meta without sha256":
        meta.write_text(json.dumps({k: v for k, v in good.items() if k != "sha256"}))
    elif damage == "another key":
        meta.write_text(json.dumps({**good, "key": "0" * 16}))
    else:
        meta.write_text("{not json")
    assert snapshot.find(cfg) is None  # never a traceback, never another entry's state
    if damage != "no meta":  # an unfinished directory is left to staged_dir's owner
        assert not directory.exists()
        aside = list(directory.parent.glob(f"{directory.name}.bad-*"))
        assert len(aside) == 1 and (aside[0] / "state").exists()  # kept for inspection
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "damaged saved boot" in err[0] and "moved aside" in err[0]


def test_qemu_argv_resumes_with_a_quoted_path_and_a_monitor(cfg: vm.VMConfig, tmp_path: Path) -> None:
    state = tmp_path / "it's here" / "state"
    argv = vm.qemu_argv(dataclasses.replace(cfg, incoming=state), 5555, tmp_path / "qmp")
    incoming = argv[argv.index("-incoming") + 1]
    assert incoming.startswith("exec:cat ")
    assert shlex.split(incoming.removeprefix("exec:")) == ["cat", str(state)]  # one word for the shell
    # QEMU connects its monitor to the harness's socket (client mode: no server=on)
    assert argv[argv.index("-chardev") + 1] == f"socket,id=qmp,path={tmp_path / 'qmp'}"
    assert argv[argv.index("-mon") + 1] == "chardev=qmp,mode=control"
    with pytest.raises(InputError, match="no commas"):
        vm.qemu_argv(cfg, 5555, tmp_path / "a,b")


def test_save_state_needs_a_running_guest(cfg: vm.VMConfig, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="not started|not running"):
        vm.VM(cfg).save_state(tmp_path / "state")


def test_prune_removes_snapshots_of_rebuilt_or_removed_kernels(cfg: vm.VMConfig, tmp_path: Path) -> None:
    keep = _fake_snapshot(cfg)
    other_kernel = tmp_path / "other-bzImage"
    other_kernel.write_bytes(b"other kernel")
    rebuilt = _fake_snapshot(dataclasses.replace(cfg, kernel=other_kernel))
    removed_kernel = tmp_path / "gone-bzImage"
    removed_kernel.write_bytes(b"gone kernel")
    gone = _fake_snapshot(dataclasses.replace(cfg, kernel=removed_kernel))
    other_kernel.write_bytes(b"other kernel, rebuilt")
    removed_kernel.unlink()
    assert sorted(snapshot.prune()) == sorted([rebuilt, gone])
    assert keep.is_dir() and not rebuilt.exists() and not gone.exists()
    assert snapshot.prune() == []


def test_find_under_the_snapshot_lock_removes_a_damaged_one_without_waiting(cfg: vm.VMConfig) -> None:
    directory = _fake_snapshot(cfg)
    (directory / "state").write_bytes(b"cut")
    done = threading.Event()

    def check() -> None:
        with cache.lock(f"snapshot-{snapshot.key(cfg)}"):
            assert snapshot.find(cfg, locked=True) is None
        done.set()

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set(), "find() waited for the lock its caller holds"
    assert not directory.exists()
