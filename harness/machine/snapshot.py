"""Saved guest states: boot a kernel once, then resume it in a fraction of a boot.

A snapshot is the guest stopped the moment its sshd came up, before anything
of the harness has logged in, written to a file by QEMU's migration code.
A VM configured with ``incoming=<state>`` resumes from it: same kernel,
initramfs, memory and devices (the key below), a new host port for SSH
(QEMU's user network keeps no connection across), and in a state identical
to a fresh boot's.  Under TCG a boot takes about 0.9 s, a resume 0.15 s; the
suite replaces the VM after every test that damages the kernel.

The boot that makes a snapshot is a real boot, watched like any other: a
kernel that panics or never reaches sshd fails there with the usual
:class:`~harness.machine.vm.BootError` and console tail.  A snapshot is published
only after one resume from it has logged in; a damaged file (its sha256 is
checked on use) is removed and made again.

Layout: ``<cache>/snapshots/<key>/`` with ``state`` (about 12 MB),
``meta.json`` and ``boot.console.log`` (the console of the boot it was
taken from).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness import cache, proc
from harness.machine.qemu import VMConfig
from harness.machine.vm import VM

log = logging.getLogger(__name__)

FORMAT = "1"
STATE = "state"
META = "meta.json"
BOOT_CONSOLE = "boot.console.log"


@dataclass(frozen=True)
class Snapshot:
    key: str
    directory: Path
    boot_seconds: float  # QEMU start -> sshd up, in the boot it was taken from
    milestones: dict[str, float]

    @property
    def state(self) -> Path:
        return self.directory / STATE

    @property
    def boot_console(self) -> Path:
        return self.directory / BOOT_CONSOLE


@functools.cache
def qemu_version(qemu: str) -> str:
    """``qemu --version``'s first line: a state file only resumes in the QEMU that wrote it."""
    result = proc.run([qemu, "--version"], check=False)
    return result.stdout.splitlines()[0] if result.stdout else f"unknown ({qemu})"


_hashes: dict[tuple[str, int, int], str] = {}


def _file_hash(path: Path) -> str:
    """sha256 of a file, remembered while its size and mtime stay the same."""
    st = path.stat()
    ident = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if ident not in _hashes:
        _hashes[ident] = cache.file_sha256(path)
    return _hashes[ident]


def key(cfg: VMConfig) -> str:
    """What the saved state depends on: the guest's code and its virtual hardware."""
    return cache.digest(
        FORMAT, _file_hash(cfg.kernel), _file_hash(cfg.initramfs) if cfg.initramfs else "-",
        str(cfg.memory_mb), cfg.kernel_append(), cfg.nic, str(cfg.guest_ssh_port), str(cfg.kvm),
        json.dumps(list(cfg.extra_args)), qemu_version(cfg.qemu), cfg.host_key or "-", str(cfg.cpus))


def root() -> Path:
    return cache.subdir("snapshots")


def find(cfg: VMConfig, *, locked: bool = False) -> Snapshot | None:
    """The snapshot for ``cfg`` if there is a sound one; a damaged one is removed.

    ``locked``: the caller holds this snapshot's lock already (flock locks are
    per open file, so taking it again here would wait for ever).
    """
    k = key(cfg)
    directory = root() / k
    try:
        raw = json.loads((directory / META).read_text())
    except FileNotFoundError:
        return None  # none, or one being made (staged under another name)
    except (OSError, ValueError):
        raw = None
    problem = _problem(raw, k, directory / STATE)
    if problem is not None:
        with contextlib.nullcontext() if locked else cache.lock(f"snapshot-{k}"):
            if directory.exists():
                cache.quarantine(directory, f"damaged saved boot ({problem}); making it again")
        return None
    assert isinstance(raw, dict)
    return Snapshot(k, directory, float(raw["boot_seconds"]),
                    {str(m): float(s) for m, s in raw["milestones"].items()})


def _problem(meta: object, k: str, state: Path) -> str | None:
    """What is wrong with a snapshot's meta.json and state file, or None when it is sound."""
    if not isinstance(meta, dict):
        return "meta.json is not a JSON object"
    types: dict[str, type | tuple[type, ...]] = {
        "format": str, "key": str, "size": int, "sha256": str, "boot_seconds": (int, float),
        "milestones": dict}
    for name, kind in types.items():
        if not isinstance(meta.get(name), kind):
            return f"meta.json has no valid {name!r}"
    if meta["format"] != FORMAT:
        return f"format {meta['format']!r}, expected {FORMAT!r}"
    if meta["key"] != k:
        return f"its key {meta['key']!r} is not the key of its inputs {k!r}"
    if not all(isinstance(s, int | float) for s in meta["milestones"].values()):
        return "meta.json has non-numeric milestones"
    try:
        size = state.stat().st_size
    except OSError:
        return "the state file is missing"
    if size != meta["size"] or _file_hash(state) != meta["sha256"]:
        return "the state file's size or sha256 differ from meta.json"
    return None


def resume_config(cfg: VMConfig, snap: Snapshot) -> VMConfig:
    """``cfg``, resuming from ``snap`` instead of booting."""
    return dataclasses.replace(cfg, incoming=snap.state)


def ensure(cfg: VMConfig, name: str = "snapshot") -> Snapshot:
    """The snapshot for ``cfg``, made now (one boot, one resume) if there is none."""
    snap = find(cfg)
    if snap is not None:
        return snap
    k = key(cfg)
    with cache.lock(f"snapshot-{k}"):
        snap = find(cfg, locked=True)  # another process made it meanwhile
        if snap is not None:
            return snap
        start = time.monotonic()
        with cache.staged_dir(root() / k) as stage:
            boot_seconds, milestones = _save(cfg, stage / STATE, name)
            _check_resume(cfg, stage, name)
            state = stage / STATE
            meta = {"format": FORMAT, "key": k, "size": state.stat().st_size,
                    "sha256": cache.file_sha256(state), "boot_seconds": round(boot_seconds, 3),
                    "milestones": {m: round(t, 3) for m, t in milestones.items()},
                    "kernel": str(cfg.kernel), "kernel_sha256": _file_hash(cfg.kernel),
                    "initramfs": str(cfg.initramfs),
                    "memory_mb": cfg.memory_mb, "append": cfg.kernel_append(),
                    "qemu": qemu_version(cfg.qemu), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            cache.write_json_atomic(stage / META, meta)
        log.info("snapshot %s made in %.1fs", k, time.monotonic() - start)
    prune()
    snap = find(cfg)
    if snap is None:  # pragma: no cover - just written and checked
        raise OSError(f"snapshot {root() / k} vanished after it was written")
    return snap


def prune() -> list[Path]:
    """Remove the snapshots of kernels that are gone or were rebuilt since; returns them.

    A build entry is rebuilt in place (bisect steps, an edited patch), so
    without this every kernel ever tested would keep its 12 MB here.
    """
    removed = []
    for meta_path in sorted(root().glob("*/" + META)):
        directory = meta_path.parent
        if not re.fullmatch(r"[0-9a-f]{16}", directory.name):
            continue  # a damaged one moved aside (kept for inspection) or a staging folder
        try:
            meta = json.loads(meta_path.read_text())
            kernel = Path(meta["kernel"])
            stale = not kernel.is_file() or _file_hash(kernel) != meta["kernel_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            stale = True
        if stale:
            with cache.lock(f"snapshot-{directory.name}"):
                cache.remove_tree(directory)
            removed.append(directory)
    return removed


def _save(cfg: VMConfig, state: Path, name: str) -> tuple[float, dict[str, float]]:
    """Boot ``cfg`` and save the guest once sshd is up; (boot seconds, milestones).

    The boot's console log goes where ``cfg`` says (the cache's vm/ folder by
    default), so a failed boot's log outlives the staging folder; a good one
    is copied in as ``boot.console.log``.
    """
    vm = VM(dataclasses.replace(cfg, incoming=None), name=f"{name}-snapshot")
    try:
        vm.start()
        info = vm.wait_ready(login=False)
        vm.save_state(state)
    finally:
        vm.stop(graceful=False)
    shutil.copyfile(vm.console_log, state.parent / BOOT_CONSOLE)
    _remove(vm.console_log)
    return info.boot_seconds, info.milestones


def _check_resume(cfg: VMConfig, stage: Path, name: str) -> None:
    """Resume the saved state once and log in: a snapshot that cannot is never published."""
    console = stage / "resume-check.console.log"
    vm = VM(dataclasses.replace(cfg, incoming=stage / STATE, console_log=console),
            name=f"{name}-resume-check")
    try:
        vm.boot()
        vm.run("true", check=True, timeout=30)
    finally:
        vm.stop(graceful=False)
    _remove(console)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
