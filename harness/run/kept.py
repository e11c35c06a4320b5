"""The VM kept running by ``harness boot --keep``, as ``harness ssh`` finds it (``vm/kept.json``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cache
from harness.errors import InputError
from harness.machine.vm import VM
from harness.run.target import Prepared


@dataclass(frozen=True)
class KeptVM:
    pid: int  # the harness process that keeps it (it stops the VM when it ends)
    name: str
    port: int
    kernel: str
    keys: dict[str, str]  # user -> private key file
    console_log: str
    host_key: str  # "ssh-ed25519 AAAA...": what the guest must present

    @classmethod
    def from_json(cls, data: Any) -> KeptVM | None:
        """The record, or None when ``data`` is not one (damaged or from an older harness)."""
        if not isinstance(data, dict):
            return None
        try:
            kept = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
        except (KeyError, TypeError):
            return None
        typed = (isinstance(kept.pid, int) and isinstance(kept.port, int) and isinstance(kept.keys, dict)
                 and all(isinstance(v, str) for v in kept.keys.values())
                 and isinstance(kept.host_key, str) and kept.host_key.startswith("ssh-"))
        return kept if typed else None


def state_path() -> Path:
    return cache.root() / "vm" / "kept.json"


def known_hosts_path() -> Path:
    return cache.root() / "vm" / "kept.known_hosts"


def write(vm: VM, prepared: Prepared) -> KeptVM:
    kept = KeptVM(pid=os.getpid(), name=vm.name, port=vm.port or 0, kernel=prepared.spec.label,
                  keys={user: str(path) for user, path in prepared.image.client_keys.items()},
                  console_log=str(vm.console_log), host_key=prepared.image.host_public_key)
    cache.write_atomic(known_hosts_path(), f"[127.0.0.1]:{kept.port} {kept.host_key}\n")
    cache.write_json_atomic(state_path(), dataclasses.asdict(kept))
    return kept


def read() -> KeptVM | None:
    """The kept VM, or None when none is running (a stale record is removed)."""
    path = state_path()
    try:
        kept = KeptVM.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    alive = False
    if kept is not None:
        try:
            os.kill(kept.pid, 0)
            alive = True
        except OSError:
            pass
    if not alive:
        path.unlink(missing_ok=True)
        return None
    return kept


def clear() -> None:
    path = state_path()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
            known_hosts_path().unlink(missing_ok=True)


def ssh_argv(kept: KeptVM, user: str, command: Sequence[str]) -> list[str]:
    """OpenSSH's command line for ``user`` on the kept VM, its host key pinned.

    A command is quoted word by word (as ``harness run`` does): the guest's
    shell sees the words the user typed, never a string to evaluate.
    """
    if user not in kept.keys:
        raise InputError(f"--user {user!r}: no such guest user (expected one of: {', '.join(kept.keys)})")
    argv = ["ssh", "-i", kept.keys[user], "-p", str(kept.port),
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts_path()}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
            "-o", "LogLevel=ERROR", f"{user}@127.0.0.1"]
    if command:
        argv += ["--", shlex.join(command)]
    return argv
