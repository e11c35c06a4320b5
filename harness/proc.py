"""The one place where the harness starts other programs.

Every command line is logged (``harness.proc`` logger) before it runs, so a
``-v`` run shows exactly what was executed.  Commands never go through a
shell: arguments are passed as a list, so user-supplied values cannot be
interpreted by one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.errors import HarnessTimeout, StageError, ToolMissing

log = logging.getLogger(__name__)

Arg = str | os.PathLike[str]


@dataclass(frozen=True)
class Completed:
    """Outcome of a finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def format_argv(argv: Sequence[Arg]) -> str:
    return shlex.join(str(a) for a in argv)


#: what C programs (cp, patch, ld, gcc, tar, git) print when a write hits a full disk
NO_SPACE = "No space left on device"


def enospc_line(output: str) -> str | None:
    """The first line of a program's output that reports a full disk (ENOSPC), if any.

    A child's errno reaches the harness only as text; callers turn this into a
    :class:`~harness.errors.DiskFull` naming their own path.
    """
    return next((line.strip() for line in output.splitlines() if NO_SPACE in line), None)


def _env(extra: Mapping[str, str | None] | None) -> dict[str, str] | None:
    """The environment with ``extra`` applied; a ``None`` value removes the variable."""
    if extra is None:
        return None
    env = dict(os.environ)
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _announce(argv: Sequence[Arg], cwd: Path | None, log_to: IO[str] | None) -> tuple[str, ...]:
    """``argv`` as strings, logged before it runs and, with ``log_to``, written at the head of its log."""
    args = tuple(str(a) for a in argv)
    log.info("run: %s%s", format_argv(args), f"  (cwd={cwd})" if cwd else "")
    if log_to is not None:
        log_to.write(f"$ {format_argv(args)}\n")
        log_to.flush()
    return args


def _popen(args: tuple[str, ...], cwd: Path | None, env: Mapping[str, str | None] | None, *,
           stdin: int, stdout: int | IO[str], stderr: int, text: bool) -> subprocess.Popen[Any]:
    try:
        return subprocess.Popen(args, cwd=cwd, env=_env(env), stdin=stdin, stdout=stdout,
                                stderr=stderr, text=text, errors="replace" if text else None)
    except FileNotFoundError as exc:
        raise ToolMissing(f"{args[0]}: command not found (run 'harness doctor')") from exc


def run(
    argv: Sequence[Arg],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    log_to: IO[str] | None = None,
    what: str | None = None,
) -> Completed:
    """Run ``argv`` to completion.

    Output is captured and returned, unless ``log_to`` is given: then stdout
    and stderr are both streamed into that file and the returned strings are
    empty.  With ``check`` a non-zero exit raises :class:`StageError` naming
    ``what`` (or the program) and the tail of its error output.
    """
    args = _announce(argv, cwd, log_to)
    start = time.monotonic()
    proc = _popen(
        args, cwd, env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=log_to if log_to is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT if log_to is not None else subprocess.PIPE,
        text=not isinstance(input, bytes),
    )
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise HarnessTimeout(f"{what or args[0]}: timed out after {timeout:.0f}s") from None
    except BaseException:
        # Ctrl-C or any other interruption: never leave the child running.
        _kill(proc)
        raise
    duration = time.monotonic() - start
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    result = Completed(args, proc.returncode, out or "", err or "", duration)
    if check and proc.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        raise StageError(
            f"{what or args[0]} failed (exit {proc.returncode}): {format_argv(args)}{detail}"
        )
    return result


def stream(
    argv: Sequence[Arg],
    *,
    log_to: IO[str],
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    input: str | None = None,
) -> Completed:
    """Run ``argv``, copying its combined output line by line into ``log_to``.

    ``on_line`` sees each line as it arrives (for progress display).  The exit
    status is returned, never raised: the caller reads the log to explain a
    failure.
    """
    args = _announce(argv, cwd, log_to)
    start = time.monotonic()
    proc = _popen(
        args, cwd, env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if input is not None and proc.stdin is not None:
            try:
                proc.stdin.write(input)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        assert proc.stdout is not None
        for line in proc.stdout:
            log_to.write(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        _kill(proc)
        raise
    finally:
        log_to.flush()
    return Completed(args, proc.returncode, "", "", time.monotonic() - start)


def _kill(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Terminate a child, escalating to SIGKILL, and reap it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def background(argv: Sequence[Arg], *, log_to: IO[bytes], new_session: bool = True,
               env: Mapping[str, str | None] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its combined output going to ``log_to``, and return at once.

    For children the caller must be able to signal while they run (the cells
    of ``harness test``); the caller waits for (reaps) it.  With
    ``new_session`` a terminal's Ctrl-C reaches the caller only.
    """
    args = tuple(str(a) for a in argv)
    log.info("start: %s", format_argv(args))
    try:
        return subprocess.Popen(args, env=_env(env), stdin=subprocess.DEVNULL, stdout=log_to,
                                stderr=subprocess.STDOUT, start_new_session=new_session)
    except FileNotFoundError as exc:
        raise ToolMissing(f"{args[0]}: command not found (run 'harness doctor')") from exc


class PtyChild:
    """A program on a pseudo-terminal (QEMU's serial console), started without forking Python.

    ``subprocess`` starts it (its fork and exec run in C, safe in a process
    with threads, where ``pty.fork``/``os.forkpty`` are not: Python 3.12+ warns
    that the child may deadlock).  ``setsid --ctty`` (util-linux, essential in
    Debian) makes it a session leader with the pty as its controlling terminal:
    a Ctrl-C on the harness terminal does not reach it, and it gets SIGHUP when
    the harness dies and the pty's master side closes.
    """

    def __init__(self, popen: subprocess.Popen[bytes], master: int, logfile: IO[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.child_fd = master
        self.logfile_read: IO[bytes] | None = logfile

    def read(self, size: int) -> bytes:
        """What the program printed (at least one byte; call when ``child_fd`` is readable).

        Raises EOFError once the program has closed the terminal (it exited).
        """
        try:
            data = os.read(self.child_fd, size)
        except OSError as exc:  # EIO: every slave side is closed
            raise EOFError(str(exc)) from None
        if not data:
            raise EOFError("end of the console")
        if self.logfile_read is not None:
            self.logfile_read.write(data)
            self.logfile_read.flush()
        return data

    def isalive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitstatus(self) -> int | None:
        code = self._popen.returncode
        return code if code is not None and code >= 0 else None

    @property
    def signalstatus(self) -> int | None:
        code = self._popen.returncode
        return -code if code is not None and code < 0 else None

    def close(self, force: bool = True) -> None:
        """Close the terminal and reap the program (SIGHUP, then SIGKILL after a second)."""
        if self.child_fd >= 0:
            os.close(self.child_fd)
            self.child_fd = -1
        if force and self.isalive():
            for sig, grace in ((signal.SIGHUP, 1.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
                try:
                    self._popen.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if not self.isalive():
            self._popen.wait()


def spawn(
    argv: Sequence[Arg],
    logfile_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    dimensions: tuple[int, int] = (50, 200),
) -> PtyChild:
    """Start ``argv`` on a new pseudo-terminal (see :class:`PtyChild`).

    Everything the child prints is appended, as raw bytes, to ``logfile_path``
    (created or truncated; the command line is written first) whenever the
    caller reads from the child, so the caller must keep reading (QEMU blocks
    when its console is not drained).  The log file is ``child.logfile_read``:
    the caller closes it, and reaps the child with ``child.close(force=True)``.
    """
    args = _announce(argv, cwd, None)
    for tool in ("setsid", args[0]):
        if which(tool) is None and not os.path.exists(tool):
            raise ToolMissing(f"{tool}: command not found (run 'harness doctor')")
    logfile_path.parent.mkdir(parents=True, exist_ok=True)
    logfile = logfile_path.open("wb")
    logfile.write(f"$ {format_argv(args)}\n".encode())
    logfile.flush()
    master, slave = os.openpty()
    try:
        rows, cols = dimensions
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO  # nothing is typed; keep what is read to what the child wrote
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        popen = subprocess.Popen(["setsid", "--ctty", *args], cwd=cwd, env=_env(env), stdin=slave,
                                 stdout=slave, stderr=slave, close_fds=True)
    except BaseException:
        os.close(master)
        logfile.close()
        raise
    finally:
        os.close(slave)
    return PtyChild(popen, master, logfile)


def which(program: str) -> str | None:
    from shutil import which as _which

    return _which(program)


def replace_process(argv: Sequence[Arg]) -> None:
    """Replace the harness with ``argv`` (for interactive programs such as ``ssh``)."""
    args = [str(a) for a in argv]
    log.info("exec: %s", format_argv(args))
    try:
        os.execvp(args[0], args)
    except FileNotFoundError as exc:
        raise ToolMissing(f"{args[0]}: command not found (run 'harness doctor')") from exc
