"""What a target test sees: a booted guest (``guest`` fixture) and rcfs helpers (``rcfs``).

:class:`GuestSession` wraps a running :class:`~harness.machine.vm.VM` with the
operations tests need: commands as any user, ``rcfs-probe`` with parsed
per-step results, background processes, the task list from /proc.  Every
command it sends goes through :meth:`GuestSession._exec`, which records it
and its outcome in the test's :class:`~harness.plugin.recorder.Recorder`
(the reproducer of a failing test is made from that record).

:class:`Rcfs` mounts rcfs with an exact option string and remembers what it
mounted and created, so :meth:`Rcfs.cleanup` can move tasks back to the top
container, remove child containers depth-first and unmount, whatever the test
left behind.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError, InputError
from harness.machine.ssh import CommandResult, command_line
from harness.machine.vm import VM
from harness.plugin.recorder import Recorder

PROBE = "rcfs-probe"
USERS = {"root": 0, "alice": 1000, "bob": 1001}


@dataclass(frozen=True)
class ProbeStep:
    op: str
    ok: bool
    errno: str | None
    detail: str


@dataclass(frozen=True)
class ProbeResult:
    """The steps ``rcfs-probe`` reported, e.g. ``open: OK`` then ``write: EINVAL``."""

    steps: tuple[ProbeStep, ...]
    exit_status: int
    output: str
    content: str = ""  # what a ``read`` step returned

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and all(s.ok for s in self.steps)

    @property
    def errno(self) -> str | None:
        """The errno name of the first failing step (None when all succeeded)."""
        return next((s.errno for s in self.steps if not s.ok), None)

    @property
    def timed_out(self) -> bool:
        """The step did not return within ``rcfs-probe -t`` (it is still blocked in the guest)."""
        return any(s.errno == "TIMEOUT" for s in self.steps)

    @property
    def failed_step(self) -> str | None:
        return next((s.op for s in self.steps if not s.ok), None)

    def step(self, op: str) -> ProbeStep | None:
        return next((s for s in self.steps if s.op == op), None)

    def __str__(self) -> str:
        return " / ".join(f"{s.op}: {'OK' if s.ok else s.errno}" for s in self.steps)


_STEP = re.compile(r"^([a-z-]+): (OK(?: (.*))?|(E[A-Z0-9]+|ERRNO_\d+|TIMEOUT))$")


def parse_probe(output: str, exit_status: int) -> ProbeResult:
    """Parse rcfs-probe's output; a ``read: OK N`` line is followed by N content bytes."""
    steps: list[ProbeStep] = []
    content = ""
    pos = 0
    while pos < len(output):
        end = output.find("\n", pos)
        end = len(output) if end < 0 else end
        line, pos = output[pos:end], end + 1
        m = _STEP.match(line)
        if not m:
            continue
        op, ok = m.group(1), m.group(2).startswith("OK")
        detail = m.group(3) or ""
        steps.append(ProbeStep(op, ok, None if ok else m.group(4), detail))
        if op == "read" and ok and detail.isdigit():
            content = output[pos:pos + int(detail)]
            pos += int(detail)
            if not content.endswith("\n") and output[pos:pos + 1] == "\n":
                pos += 1
    return ProbeResult(tuple(steps), exit_status, output, content)


@dataclass
class Spawned:
    pid: int
    user: str


class GuestSession:
    """The ``guest`` fixture: run things in the booted kernel."""

    def __init__(self, vm: VM, system_map: Path | None = None, recorder: Recorder | None = None) -> None:
        self.vm = vm
        self.system_map = system_map
        self.discard_vm = False  # set it to give the next test a freshly booted VM
        self.recorder = recorder if recorder is not None else Recorder()
        self._spawned: list[Spawned] = []

    def _exec(self, kind: str, cmd: str | Sequence[str], *, user: str = "root", timeout: float = 60,
              input: str | bytes | None = None, check: bool = False) -> CommandResult:
        """Send one command and record it with its outcome (also when it raises)."""
        line = command_line(cmd)
        started = self.recorder.start()
        try:
            result = self.vm.run(line, user=user, timeout=timeout, input=input)
        except HarnessError as exc:
            self.recorder.add(kind, line, started=started, user=user, input=input, error=str(exc))
            raise
        self.recorder.add(kind, line, started=started, user=user, input=input,
                          exit_status=result.exit_status, stdout=result.stdout, stderr=result.stderr)
        return result.check() if check else result

    # -- commands -------------------------------------------------------------------

    def run(self, cmd: str | Sequence[str], user: str = "root", timeout: float = 60,
            input: str | bytes | None = None) -> CommandResult:
        return self._exec("run", cmd, user=user, timeout=timeout, input=input)

    def sh(self, script: str, user: str = "root", timeout: float = 60) -> str:
        """Run a shell script; its stdout, or CommandFailed when it exits non-zero."""
        return self._exec("sh", script, user=user, timeout=timeout, check=True).stdout

    def probe(self, *args: str, user: str = "root", as_uid: int | None = None,
              timeout: float = 60) -> ProbeResult:
        """Run ``rcfs-probe ARGS`` (``as_uid``: switch uid inside the probe, as root)."""
        argv = [PROBE] + (["-u", str(as_uid)] if as_uid is not None else []) + list(args)
        result = self._exec("probe", argv, user=user, timeout=timeout)
        return parse_probe(result.stdout, result.exit_status)

    def write(self, path: str, data: str, user: str = "root", repeat: int | None = None,
              existing: bool = True) -> ProbeResult:
        """One open/write(2)/close of exactly ``data`` (times ``repeat``)."""
        opts = (["-e"] if existing else []) + (["-n", str(repeat)] if repeat else [])
        return self.probe(*opts, "write", path, data, user=user)

    def read(self, path: str, user: str = "root") -> str:
        return self._exec("read", ["cat", "--", path], user=user, check=True).stdout

    # -- processes --------------------------------------------------------------------

    def spawn(self, command: str = "sleep 100000", user: str = "root") -> int:
        """Start a background process as ``user``; returns its pid (killed at cleanup)."""
        out = self._exec("spawn", f"nohup {command} >/dev/null 2>&1 </dev/null & echo $!", user=user,
                         check=True).stdout
        pid = int(out.strip())
        self.recorder.set_pid(len(self.recorder.commands) - 1, pid)
        self._spawned.append(Spawned(pid, user))
        return pid

    def kill(self, pid: int, wait: bool = True) -> None:
        self._exec("kill", f"kill -9 {pid} 2>/dev/null; true")
        if wait:
            self._exec("kill", f"while [ -d /proc/{pid} ]; do usleep 20000; done", timeout=20)

    def pids(self) -> list[int]:
        """Every task (process) the guest's /proc lists, sorted."""
        out = self._exec("run", "ls /proc", check=True).stdout.split()
        return sorted(int(p) for p in out if p.isdigit())

    def tasks_snapshot(self, tasks_file: str, attempts: int = 5) -> TasksSnapshot:
        """``tasks_file`` read between two /proc scans, retried until both scans agree."""
        for _ in range(attempts):
            snap = parse_snapshot(self.sh(f"TASKS={shlex.quote(tasks_file)}\n{_SNAPSHOT}"))
            if snap.stable:
                return snap
        raise AssertionError(f"the guest's task set kept changing: {sorted(snap.before ^ snap.after)}")

    def alive(self, pid: int) -> bool:
        return self._exec("run", f"test -d /proc/{pid}").exit_status == 0

    def crash_kernel(self, panic: bool = True) -> None:
        """Make the guest kernel oops (and panic, with ``panic``) on purpose.

        2.6.20 has no SysRq crash trigger without kexec, so this zeroes the
        ``sync`` entry of ``sys_call_table`` through /dev/kmem and calls sync:
        a NULL call in kernel mode, an Oops; with ``panic_on_oops`` a panic.
        """
        table = _symbol(self.system_map, "sys_call_table") if self.system_map else None
        if table is None:
            raise InputError(f"crash_kernel: sys_call_table not found in {self.system_map}")
        setup = "echo 1 > /proc/sys/kernel/panic_on_oops; " if panic else ""
        self._exec(
            "run", f"{setup}[ -c /dev/kmem ] || mknod /dev/kmem c 1 2; "
            f"printf '\\000\\000\\000\\000' | dd of=/dev/kmem bs=1 seek={table + 36 * 4} "
            "count=4 conv=notrunc 2>/dev/null", check=True)
        self._exec("run", "sync", timeout=10)

    def cleanup(self) -> None:
        """Kill what :meth:`spawn` started (one round trip)."""
        if self._spawned:
            pids = " ".join(str(s.pid) for s in reversed(self._spawned))
            self._exec("kill", f"kill -9 {pids} 2>/dev/null; true")
        self._spawned.clear()


# /proc, then a tasks file, then /proc again, in ONE shell run that uses only
# builtins between the scans, so the check itself makes no process come or go.
_SNAPSHOT = r"""
scan() {
    for d in /proc/[0-9]*; do
        { read -r s < "$d/stat"; } 2>/dev/null && echo "$1 $s"
    done
}
echo "self $$"
scan before
while read -r p; do echo "task $p"; done < "$TASKS"
scan after
"""


@dataclass(frozen=True)
class TasksSnapshot:
    """A tasks file read between two scans of /proc (zombies left out of the scans)."""

    listed: list[int]  # the tasks file, in file order
    before: set[int]
    after: set[int]
    reader: int  # the pid of the shell that read it

    @property
    def stable(self) -> bool:
        return self.before == self.after


def _live_pids(lines: list[str], tag: str) -> set[int]:
    pids = set()
    for line in lines:
        if line.startswith(tag + " "):
            stat = line[len(tag) + 1:]
            if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                pids.add(int(stat.split()[0]))
    return pids


def parse_snapshot(output: str) -> TasksSnapshot:
    lines = output.splitlines()
    return TasksSnapshot(
        listed=[int(line.split()[1]) for line in lines if line.startswith("task ")],
        before=_live_pids(lines, "before"),
        after=_live_pids(lines, "after"),
        reader=next(int(line.split()[1]) for line in lines if line.startswith("self ")),
    )


def _symbol(system_map: Path, name: str) -> int | None:
    for line in system_map.read_text().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == name:
            return int(fields[0], 16)
    return None




# The mount points made in each VM so far (a VM outlives the tests that use it).
_mountpoints: weakref.WeakKeyDictionary[VM, set[str]] = weakref.WeakKeyDictionary()


@dataclass
class Mount:
    path: str
    options: str | None


@dataclass
class Rcfs:
    """The ``rcfs`` fixture: mounts with guaranteed cleanup."""

    guest: GuestSession
    mounts: list[Mount] = field(default_factory=list)
    _counter: int = 0
    _touched: bool = False  # a mount was attempted: cleanup checks the subsystems are free

    def new_mountpoint(self) -> str:
        self._counter += 1
        path = f"/mnt/rcfs{self._counter}"
        made = _mountpoints.setdefault(self.guest.vm, set())
        if path not in made:  # the next tests on this VM use the same directories
            self.guest.sh(f"mkdir -p {path}")
            made.add(path)
        else:  # a fresh guest replaying this test needs it all the same
            self.guest.recorder.add("mountpoint", f"mkdir -p {path}", started=self.guest.recorder.start(),
                                    replay_only=True)
        return path

    def try_mount(self, options: str | None, path: str | None = None) -> tuple[str, ProbeResult]:
        """mount(2) with exactly ``options`` (None: a NULL data pointer)."""
        path = path or self.new_mountpoint()
        self._touched = True
        result = self.guest.probe("mount", "none", path, "rcfs", "-" if options is None else options)
        if result.ok:
            self.mounts.append(Mount(path, options))
        return path, result

    def mount(self, options: str | None = None, path: str | None = None) -> str:
        path, result = self.try_mount(options, path)
        assert result.ok, f"mount -o {options!r} failed: {result}"
        return path

    def umount(self, path: str, timeout: float = 20) -> ProbeResult:
        """umount(2); one that blocks for ``timeout`` seconds is reported as ``umount: TIMEOUT``
        (the guest gives up on it: no SSH timeout, the connection stays usable)."""
        result = self.guest.probe("-t", str(int(timeout * 1000)), "umount", path, timeout=timeout + 30)
        if result.ok:
            self.mounts = [m for m in self.mounts if m.path != path]
        return result

    def mkdir(self, path: str) -> str:
        result = self.guest.probe("mkdir", path)
        assert result.ok, f"mkdir {path} failed: {result}"
        return path

    def tasks(self, container: str) -> list[int]:
        text = self.guest.read(posixpath.join(container, "tasks"))
        return [int(x) for x in text.split()]

    def tasks_text(self, container: str) -> str:
        return self.guest.read(posixpath.join(container, "tasks"))

    def attach(self, container: str, pid: int | str, user: str = "root") -> ProbeResult:
        return self.guest.write(posixpath.join(container, "tasks"), str(pid), user=user)

    def containers(self, top: str) -> list[str]:
        """Every container directory below ``top``, deepest first."""
        out = self.guest.sh(f"find {shlex.quote(top)} -mindepth 1 -type d")
        return sorted(out.split(), key=lambda p: p.count("/"), reverse=True)

    def cleanup(self, timeout: float = 30) -> list[str]:
        """Empty and remove every child container, then unmount; returns the problems.

        One guest process does it all (``rcfs-probe cleanup``, one SSH round
        trip however many containers): for each mount, newest first, the
        tasks of each container go back to the top, containers are removed
        deepest first, then the mount is unmounted; last, a mount of all
        subsystems checks that nothing is left bound (a detached mount, a
        hung umount, a hierarchy kept alive by leftover containers).
        """
        if not self.mounts and not self._touched:
            return []
        # the post-condition check runs even when the test unmounted everything itself
        tops = [m.path for m in reversed(self.mounts)]
        result = self.guest.run([PROBE, "cleanup", *tops], timeout=timeout)
        self._touched = False
        self.mounts.clear()
        problems = []
        for line in result.stdout.splitlines():
            fields = line.split()
            if len(fields) == 4 and fields[0] == "PROBLEM":
                problems.append(f"{fields[1]} {fields[2]}: {fields[3]}")
        if result.exit_status not in (0, 1) or (result.exit_status == 1 and not problems):
            problems.append(f"{PROBE} cleanup exited {result.exit_status}: {result.stderr.strip()}")
        return problems
