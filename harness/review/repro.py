"""Reproducer scripts: a failing test's guest commands as one standalone POSIX sh script.

The guest API records every command a test sends with its outcome
(:class:`~harness.results.guestlog.TestTrace`).  :func:`script` replays the
commands of the failing run, up to the one the test failed at, on a fresh
guest (as root, ``harness run ... -- sh -s < script``), and decides:

* the kernel log is read (and cleared) after every step; a kernel report
  (oops, BUG, lockdep, warning, panic -- :data:`KERNEL_REPORT`) means the bug
  showed;
* unless the test failed on a kernel report (then that is the check), the
  *failing step* -- the last command the test sent before it failed --
  is checked against what it gave in the failing run: the same exit status
  and the same output (pids of processes the script started stand for the
  test's) mean the bug showed.  A step that never returned in the failing
  run is checked for hanging instead.  The test rejected that result, so
  its coming back is the bug; any other result is reported and counted as
  not reproduced.  An output longer than :data:`MAX_COMPARED_LINES` lines
  (a script's report, /proc/slabinfo...) is not compared: numbers in it
  change from run to run and the test judged it on the host, so the script
  says it cannot tell (exit 2) unless the kernel log showed the bug.

Exit status: 1 the bug showed, 0 it did not, 2 cannot tell.  A crash of the
guest makes ``harness run`` itself fail (125).  Steps before the failing one
are not judged, but one that exits otherwise than in the test's run is noted
on stderr (the setup went differently).  Each command runs in a child shell,
as over SSH; a command the test polled is replayed as a loop waiting for the
result it finally gave; host-side pauses of half a second or more become
``sleep``.  A number a command printed as its whole output (the
pid of a process it started) and later commands use becomes a variable too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.plugin.guest import PROBE, USERS
from harness.results.guestlog import GuestCommand, TestTrace

KERNEL_REPORT = (
    "Kernel panic - not syncing|kernel BUG at|Kernel BUG at|BUG: |WARNING: |Oops: |Unable to handle kernel"
    "|general protection fault|invalid opcode: |double fault: |possible recursive locking detected"
    "|inconsistent lock state|possible circular locking dependency detected"
    "|possible irq lock inversion dependency detected|lock order detected|bad unlock balance detected"
    "|held lock freed|lock held at task exit time|lock held when returning to user space"
    "|trying to register non-static key"
)
"""A POSIX ERE (busybox grep -E) for the start of a kernel report, as the console scanner sees it."""
HANG_SECONDS = 30
POLL_LIMIT = 600
MAX_COMPARED_LINES = 20


def sq(text: str) -> str:
    """``text`` single-quoted for sh."""
    return "'" + text.replace("'", "'\\''") + "'"


def substitute(command: str, pids: dict[int, str]) -> str:
    """``command`` with each spawned pid (a whole number) replaced by its variable, quoted right
    for where it stands (outside quotes, in double quotes, in single quotes)."""
    if not pids:
        return command
    numbers = "|".join(str(p) for p in sorted(pids, reverse=True))
    pattern = re.compile(rf"(?<![0-9])({numbers})(?![0-9])")
    out: list[str] = []
    state = ""  # "", "'" or '"'
    i = 0
    while i < len(command):
        c = command[i]
        m = pattern.match(command, i) if c.isdigit() and (i == 0 or not command[i - 1].isdigit()) else None
        if m:
            var = pids[int(m.group(1))]
            out.append({"": f'"${{{var}}}"', '"': f"${{{var}}}", "'": f"'\"${{{var}}}\"'"}[state])
            i = m.end()
            continue
        if state == "" and c == "\\" and i + 1 < len(command):
            out.append(command[i:i + 2])
            i += 2
            continue
        if state == '"' and c == "\\" and i + 1 < len(command):
            out.append(command[i:i + 2])
            i += 2
            continue
        if state == "" and c in "'\"":
            state = c
        elif state == c:
            state = ""
        out.append(c)
        i += 1
    return "".join(out)


def dq_literal(text: str, pids: dict[int, str]) -> str:
    """``text`` as a double-quoted sh word, spawned pids as their variables."""
    escaped = re.sub(r'([\\"$`])', r"\\\1", text)
    for pid, var in sorted(pids.items(), key=lambda kv: -kv[0]):
        escaped = re.sub(rf"(?<![0-9]){pid}(?![0-9])", f"${{{var}}}", escaped)
    return f'"{escaped}"'


def as_user(cmd: GuestCommand) -> tuple[str, str | None]:
    """The command to run as root for ``cmd``, and a note when it cannot be run as its user."""
    if cmd.user == "root":
        return cmd.command, None
    uid = USERS.get(cmd.user)
    if cmd.kind in ("probe", "write") and cmd.command.startswith(PROBE + " ") and uid is not None \
            and " -u " not in f" {cmd.command} ":
        return f"{PROBE} -u {uid} {cmd.command[len(PROBE) + 1:]}", None
    return cmd.command, f"ran as {cmd.user} in the test; this script runs it as root"


@dataclass(frozen=True)
class Step:
    number: int
    command: GuestCommand
    repeat: int = 1  # a poll: the same command this many times in a row
    captures: int | None = None  # the number (a pid) it printed that later steps use
    polled: int | None = None  # a poll: the status it kept giving (``command`` holds the last one)


_NUMBER = re.compile(r"\s*([0-9]+)\s*")


def printed_number(cmd: GuestCommand) -> int | None:
    """The number ``cmd`` printed as its whole output (a pid: ``spawn``, ``cat pidfile``)."""
    if cmd.pid is not None:
        return cmd.pid
    m = _NUMBER.fullmatch(cmd.stdout) if cmd.exit_status == 0 else None
    return int(m.group(1)) if m and int(m.group(1)) > 1 else None


def _uses(command: GuestCommand, number: int) -> bool:
    text = command.command + (command.input or "")
    return re.search(rf"(?<![0-9]){number}(?![0-9])", text) is not None


def steps_of(trace: TestTrace) -> list[Step]:
    """The commands to replay, up to the one the test failed at (teardown ones only when the
    teardown failed); a run of one command repeated with the same result, but maybe the last
    (a poll), is one step."""
    failing = trace.failing_index()
    limit = failing + 1 if failing is not None else len(trace.commands)
    wanted = [c for c in trace.commands[:limit]
              if c.phase != "teardown" or trace.failed_phase == "teardown"]
    steps: list[Step] = []
    i = 0
    while i < len(wanted):
        j = i
        while (j + 1 < len(wanted) and wanted[j + 1].command == wanted[i].command
               and wanted[j + 1].input == wanted[i].input and wanted[j + 1].user == wanted[i].user
               and wanted[j].exit_status == wanted[i].exit_status and not wanted[i].replay_only):
            j += 1
        steps.append(Step(len(steps) + 1, wanted[j], j - i + 1,
                          polled=wanted[i].exit_status if j > i else None))
        i = j + 1
    for k, step in enumerate(steps):
        number = printed_number(step.command)
        if number is not None and any(_uses(later.command, number) for later in steps[k + 1:]):
            steps[k] = Step(step.number, step.command, step.repeat, number, step.polled)
    return steps


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.splitlines())


def _invocation(cmd: GuestCommand, pids: dict[int, str]) -> str:
    """``cmd`` as the script runs it: in a child shell, as over SSH (a subshell; ``sh -c`` when
    it uses ``$$``, which a subshell would not give its own value), its input piped in."""
    command, _ = as_user(cmd)
    line = substitute(command, pids)
    call = f"sh -c {sq(line)}" if "$$" in line else f"( {line}\n)" if "\n" in line else f"( {line} )"
    if cmd.input is not None:
        return f"printf '%s' {sq(cmd.input)} | {call}"
    return call


def script(trace: TestTrace, *, kernel: str = "", run_hint: str = "", assertion: str = "",
           hang_seconds: int = HANG_SECONDS) -> str:
    """The reproducer of ``trace`` (see the module docstring)."""
    steps = steps_of(trace)
    failing = next((s for s in reversed(steps) if not s.command.replay_only), None) if trace.failed else None
    pids: dict[int, str] = {}
    notes = [n for s in steps if (n := as_user(s.command)[1])]
    out = [
        "#!/bin/sh",
        f"# Reproducer of {trace.nodeid}"
        + (f" (failed on {kernel or trace.kernel})" if trace.failed else " (it passed on that kernel)"),
    ]
    for label, text in (("Known as", trace.behaviour), ("The test checks", trace.doc),
                        ("The test asserts", assertion)):
        if text:
            out.append(_comment(f"{label}: {text}"))
    if run_hint:
        out.append(_comment(f"Run it on a fresh guest: {run_hint}"))
    out += [
        "# Exit status: 1 when the bug shows (the failing step gives again what the test rejected, or",
        "# the kernel reports a problem), 0 when it does not, 2 when it cannot tell.",
    ]
    if notes:
        out.append("# Note: some steps " + notes[0] + ".")
    if trace.dropped:
        out.append(f"# Note: the test sent {trace.dropped} more commands than were recorded.")
    out += [
        "",
        'T=${TMPDIR:-/tmp}; KLOG=$T/repro.klog',
        "dmesg -c >/dev/null 2>&1; : > $KLOG",
        f"KERNEL_REPORT={sq(KERNEL_REPORT)}",
        "kcheck() {",
        "    dmesg -c >> $KLOG 2>/dev/null",
        '    if grep -E -q "$KERNEL_REPORT" $KLOG; then',
        '        echo "BUG SHOWN: the kernel reported a problem after step $1:"',
        '        grep -E "$KERNEL_REPORT" $KLOG; echo "--- kernel log:"; tail -n 60 $KLOG',
        "        exit 1",
        "    fi",
        "}",
        "note() { [ \"$2\" = \"$3\" ] || echo \"note: step $1 exited $2 (in the test's run: $3)\" >&2; }",
        "",
    ]
    for step in steps:
        cmd = step.command
        if cmd.gap >= 0.5 and step.repeat == 1:
            out.append(f"sleep {round(cmd.gap, 1):g}")
        label = f"step {step.number}" + (f" ({cmd.phase})" if cmd.phase != "call" else "")
        out.append(_comment(f"{label}: {cmd.command}" if "\n" not in cmd.command else f"{label}:"))
        if step is failing:
            judge = not trace.kernel_report or trace.failed_on_its_own  # else the report was the failure
            out += _failing(step, pids, hang_seconds, judge_output=judge)
            break
        out += _plain(step, pids)
        out.append(f"kcheck {step.number}")
    if out[-1] != "exit 2":  # (the failing step could not be judged: it has said so)
        out.append('echo "not reproduced: no step gave the failing result and the kernel reported nothing"')
        out.append("exit 0")
    return "\n".join(out) + "\n"


def _plain(step: Step, pids: dict[int, str]) -> list[str]:
    cmd = step.command
    call = _invocation(cmd, pids)
    if step.captures is not None:
        var = pids[step.captures] = f"P{len(pids) + 1}"
        return [f"{var}=$( {call} ); export {var}; echo \"{var}=${var}\""]
    if step.repeat > 1 and cmd.exit_status is not None:
        gap, num = max(0.1, round(cmd.gap, 1)), step.number
        if cmd.exit_status != step.polled:  # polled until the result changed: wait for that
            return [f"n=0; while :; do {call} >/dev/null; rc=$?; [ $rc = {cmd.exit_status} ] && break",
                    f"    kcheck {num}; n=$((n + 1)); [ $n -ge {max(POLL_LIMIT, 3 * step.repeat)} ] && break",
                    f"    sleep {gap:g}",
                    f"done; note {num} $rc {cmd.exit_status}"]
        # the test stopped polling for a reason of its own (a kernel report...): poll as long
        return [f"n=0; while [ $n -lt {step.repeat} ]; do {call} >/dev/null; rc=$?",
                f"    [ $rc = {step.polled} ] || break; kcheck {num}; n=$((n + 1)); sleep {gap:g}",
                f"done; note {num} $rc {step.polled}"]
    if cmd.exit_status is None:
        return [call]
    return [call, f"note {step.number} $? {cmd.exit_status}"]


def _failing(step: Step, pids: dict[int, str], hang_seconds: int, judge_output: bool) -> list[str]:
    cmd = step.command
    call = _invocation(cmd, pids)
    n = step.number
    if cmd.exit_status is None:  # it never returned: a hang (or the guest died under it)
        return [f"( {call} ) > $T/repro.out 2>&1 & p=$!",
                f"i=0; while kill -0 $p 2>/dev/null && [ $i -lt {hang_seconds} ]; do",
                "    sleep 1; i=$((i + 1))",
                "done",
                f"kcheck {n}",
                f"if kill -0 $p 2>/dev/null; then echo \"BUG SHOWN: step {n} still blocked after "
                f"{hang_seconds} s (in the test's run it never returned)\"; exit 1; fi",
                "cat $T/repro.out"]
    seen = cmd.stdout.rstrip("\n")
    lines = [f"out=$( {call} 2>/dev/null ); rc=$?",
             'printf \'%s\\n\' "$out"',
             f"kcheck {n}"]
    if not judge_output:  # the test failed on the kernel's report: that is the bug, nothing else
        return lines
    if cmd.stdout_truncated or len(seen.splitlines()) > MAX_COMPARED_LINES:
        why = f"cannot tell: the test judged the output of step {n} on the host; the kernel reported nothing"
        return [*lines, f"echo {sq(why)}", "exit 2"]
    shown = f"exit {cmd.exit_status}, " + (f"output {seen!r}" if len(seen) < 200 else "the same output")
    lines.append(f'if [ $rc = {cmd.exit_status} ] && [ "$out" = {dq_literal(seen, pids)} ]; then')
    lines.append(f"    echo {sq(f'BUG SHOWN: step {n} gave what the test rejected ({shown})')}; exit 1")
    lines.append("fi")
    lines.append(f'echo "step {n} gave exit $rc and other output than in the failing run: not the bug"')
    return lines
