"""The host side of scripts/debian-chroot: commands, signals, the chroot lock, mounts and processes."""

# Only the standard library, like the script: it runs before any virtual environment exists.

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from debian_chroot_lib import PROG, Failure, KernelSrc, duration, mounts_under, unescape_mount

BINDS = ("/proc", "/sys", "/dev", "/dev/pts", "/dev/shm")


class Interrupted(Exception):
    """SIGTERM or SIGHUP; treated like Ctrl-C."""


def say(msg: str) -> None:
    """A progress or error line on stderr."""
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    """A short command whose failure ends the script with its last error line."""
    r = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        detail = (r.stderr or r.stdout).strip().splitlines()
        raise Failure(f"{what} failed (exit {r.returncode}): {detail[-1] if detail else 'no output'}")
    return r


def stream(argv: Sequence[str], sink: Callable[[bytes], None], env: Mapping[str, str] | None = None) -> int:
    """Run a long command in its own process group, feeding its output to ``sink``.

    Ctrl-C (or SIGTERM) here is passed on to the whole group as SIGINT, then SIGTERM, then SIGKILL.
    """
    child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             env=dict(env) if env is not None else None)
    assert child.stdout is not None
    try:
        while chunk := os.read(child.stdout.fileno(), 65536):
            sink(chunk)
        return child.wait()
    except BaseException:
        with signals_held():
            for sig, grace in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, sig)
                try:
                    child.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        raise
    finally:
        child.stdout.close()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Let cleanup finish: a second Ctrl-C must not leave mounts behind."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def raise_interrupted(signum: int, _frame: object) -> NoReturn:
    """Signal handler: SIGTERM and SIGHUP end the run like Ctrl-C."""
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def chroot_lock(chroots: Path, suite: str) -> Iterator[None]:
    """One run per chroot at a time; a second one waits, naming the holder."""
    path = chroots / f".{suite}.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            say(f"waiting for the run holding {path} (pid {f.read().strip() or '?'})")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def current_mounts(root: Path) -> list[str]:
    """What is mounted at or below ``root`` now, deepest first."""
    return mounts_under(Path("/proc/self/mountinfo").read_text(), root)


def private_mount_namespace() -> None:
    """Mounts made from here on exist only for this process and its children.

    The kernel removes them when the last of those processes ends, even if this script is killed.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        raise Failure(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    run(["mount", "--make-rprivate", "/"], "mount --make-rprivate /")


def remove_tree(path: Path) -> None:
    """Delete a chroot (or part of one), refusing while anything is mounted inside it."""
    if not os.path.lexists(path):
        return
    left = current_mounts(path)
    if left:
        raise Failure(f"refusing to delete {path}: still mounted there: {', '.join(left)}")
    run(["rm", "-rf", "--one-file-system", "--", str(path)], f"rm -rf {path}")


def processes_in(root: Path) -> list[int]:
    """Processes whose root directory is the chroot (or below it)."""
    me = str(root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            r = os.readlink(entry / "root")
        except OSError:
            continue
        if r == me or r.startswith(me + "/"):
            found.append(int(entry.name))
    return found


def stop_leftovers(root: Path) -> None:
    """Stop processes still running in the chroot (a QEMU that outlived its harness, say)."""
    pids = processes_in(root)
    if not pids:
        return
    say(f"stopping {len(pids)} process(es) left running in the chroot: {pids}")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and processes_in(root):
            time.sleep(0.1)
        pids = processes_in(root)
        if not pids:
            return


def unmount_all(root: Path) -> None:
    """Unmount everything below ``root``, deepest first; lazily only as a last resort."""
    for point in current_mounts(root):
        r = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            say(f"umount {point}: {r.stderr.strip()}; detaching it lazily")
            subprocess.run(["umount", "--lazy", point], check=False)
    left = current_mounts(root)
    if left:
        raise Failure(f"still mounted after cleanup: {', '.join(left)}")


def mount_binds(root: Path, ksrc: KernelSrc | None) -> None:
    """Bind /proc, /sys, /dev, /dev/pts (and /dev/shm) into the chroot; the kernel source read-only."""
    host_mounts = {unescape_mount(line.split()[4]) for line in
                   Path("/proc/self/mountinfo").read_text().splitlines() if len(line.split()) > 4}
    for src in BINDS:
        if src == "/dev/shm" and src not in host_mounts:
            continue
        dst = root / src.lstrip("/")
        dst.mkdir(parents=True, exist_ok=True)
        run(["mount", "--bind", src, str(dst)], f"mount --bind {src}")
        run(["mount", "--make-private", str(dst)], f"mount --make-private {dst}")
    if ksrc is not None:
        dst = root / ksrc.inside.lstrip("/")
        if ksrc.is_dir:
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.touch()
        run(["mount", "--bind", str(ksrc.host), str(dst)], f"mount --bind {ksrc.host}")
        run(["mount", "--make-private", str(dst)], f"mount --make-private {dst}")
        run(["mount", "-o", "remount,bind,ro", str(dst)], f"read-only remount of {dst}")


class Progress:
    """Feeds a long, chatty command's output to its log; shows a status line every few seconds."""

    def __init__(self, what: str, log: Path, every: float = 15.0) -> None:
        self.what, self.every = what, every
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.start = self.shown = time.monotonic()
        self.last = ""
        self.tail = b""

    def __call__(self, chunk: bytes) -> None:
        self.log.write(chunk)
        self.tail = (self.tail + chunk)[-4096:]
        lines = [x for x in chunk.decode(errors="replace").splitlines() if x.strip()]
        if lines:
            self.last = lines[-1].strip()
        now = time.monotonic()
        if now - self.shown >= self.every:
            self.shown = now
            say(f"{self.what}: {duration(now - self.start)}: {self.last[:100]}")

    def close(self) -> None:
        self.log.close()
