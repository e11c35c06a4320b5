"""The ``tasks`` file: what it lists, in which format, and what writing a pid to it does.

Reading ``tasks`` lists the pids of the tasks in the container, ascending,
one decimal pid per line, each line ending in a newline (an empty container
reads as zero bytes).  Writing a pid moves that task into the container;
``0`` moves the writer itself.
"""

from __future__ import annotations

import re

import pytest

from harness.plugin.guest import GuestSession, ProbeResult, Rcfs

PID_LINE = re.compile(r"[1-9][0-9]*")
SUBSYSTEMS = ("test0", "test1", "test2")


def parse_tasks(text: str) -> list[int]:
    """The pids of a tasks file's text, asserting its exact format on the way."""
    if text == "":
        return []
    assert text.endswith("\n"), f"tasks does not end with a newline: {text[-40:]!r}"
    lines = text[:-1].split("\n")
    bad = [line for line in lines if not PID_LINE.fullmatch(line)]
    assert not bad, f"tasks has lines that are not pids: {bad[:5]!r}"
    pids = [int(line) for line in lines]
    assert pids == sorted(set(pids)), f"tasks is not sorted ascending without repeats: {pids}"
    return pids


def tasks_of(rcfs: Rcfs, container: str) -> list[int]:
    return parse_tasks(rcfs.tasks_text(container))


def attach_counts(guest: GuestSession, container: str) -> list[str]:
    return [guest.read(f"{container}/{ss}.attach_count") for ss in SUBSYSTEMS]


def detail(result: ProbeResult, op: str) -> str:
    """What a successful step reported (``write: OK 5`` -> "5")."""
    step = result.step(op)
    assert step is not None and step.ok, str(result)
    return step.detail


def test_top_lists_every_task(rcfs: Rcfs) -> None:
    """The top container lists every task of the system (kernel threads too), nothing else."""
    top = rcfs.mount()
    # /proc, the tasks file, /proc again in one shell run of builtins: when both
    # scans agree, the file must list exactly those pids (zombies left out)
    snap = rcfs.guest.tasks_snapshot(f"{top}/tasks")
    assert snap.reader in snap.listed
    assert 1 in snap.listed
    assert sorted(set(snap.listed)) == snap.listed
    assert snap.listed == sorted(snap.before)


def test_tasks_format(rcfs: Rcfs) -> None:
    """Ascending decimal pids, one per line, every line (the last too) ending in a newline."""
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pids = [rcfs.guest.spawn() for _ in range(3)]
    for pid in reversed(pids):
        assert rcfs.attach(c, pid).ok
    assert rcfs.tasks_text(c) == "".join(f"{pid}\n" for pid in sorted(pids))
    top_pids = tasks_of(rcfs, top)  # asserts the format of a long list
    assert 1 in top_pids and not set(pids) & set(top_pids)
    for pid in pids:
        rcfs.guest.kill(pid)
    assert rcfs.tasks_text(c) == ""


def test_new_container_is_empty(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    result = rcfs.guest.probe("read", f"{c}/tasks")
    assert result.ok, str(result)
    assert detail(result, "read") == "0"
    assert attach_counts(rcfs.guest, c) == ["0\n"] * 3


def test_writing_pid_moves_task(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pid = rcfs.guest.spawn()
    assert pid in tasks_of(rcfs, top)
    result = rcfs.attach(c, pid)
    assert result.ok, str(result)
    assert detail(result, "write") == str(len(str(pid)))
    assert tasks_of(rcfs, c) == [pid]
    assert pid not in tasks_of(rcfs, top)
    assert attach_counts(rcfs.guest, c) == ["1\n"] * 3
    # writing the pid of a task already there changes nothing
    assert rcfs.attach(c, pid).ok
    assert tasks_of(rcfs, c) == [pid]
    assert attach_counts(rcfs.guest, c) == ["1\n"] * 3
    rcfs.guest.kill(pid)
    assert tasks_of(rcfs, c) == []


def test_move_between_containers(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c1, c2 = rcfs.mkdir(f"{top}/c1"), rcfs.mkdir(f"{top}/c2")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(c1, pid).ok
    result = rcfs.attach(c2, pid)
    assert result.ok, str(result)
    assert tasks_of(rcfs, c1) == []
    assert tasks_of(rcfs, c2) == [pid]
    assert pid not in tasks_of(rcfs, top)
    assert attach_counts(rcfs.guest, c2) == ["1\n"] * 3


def test_move_back_to_top(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(c, pid).ok
    assert pid not in tasks_of(rcfs, top)
    result = rcfs.attach(top, pid)
    assert result.ok, str(result)
    assert pid in tasks_of(rcfs, top)
    assert tasks_of(rcfs, c) == []


def test_writing_zero_moves_the_writer(rcfs: Rcfs) -> None:
    """``0`` moves the writing process: a shell writes it with its builtin echo (one write)."""
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    out = rcfs.guest.sh(
        f"echo 0 > {c}/tasks || exit 9\n"
        "echo \"self $$\"\n"
        f"while read -r p; do echo \"in $p\"; done < {c}/tasks\n"
        f"while read -r p; do [ \"$p\" = $$ ] && echo top-lists-self; done < {top}/tasks\n"
        "true\n"
    ).split("\n")
    self_pid = int(out[0].split()[1])
    assert [line for line in out[1:] if line] == [f"in {self_pid}"]
    assert attach_counts(rcfs.guest, c) == ["1\n"] * 3
    # the shell has exited since: the container is empty again
    assert tasks_of(rcfs, c) == []


def test_forked_child_starts_in_parents_container(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    out = rcfs.guest.sh(
        f"echo 0 > {c}/tasks || exit 9\n"
        "sleep 100000 </dev/null >/dev/null 2>&1 &\n"
        "echo \"$$ $!\"\n"
        f"cat {c}/tasks\n"
        "kill -9 $! && wait\n"
        "true\n"
    ).split("\n", 1)
    shell, child = (int(x) for x in out[0].split())
    listed = parse_tasks(out[1])
    # cat was forked in the container too: it lists itself
    assert shell in listed and child in listed and len(listed) == 3, listed
    assert tasks_of(rcfs, c) == []


@pytest.mark.posted_bug("tasks write: non-numeric input fails with EIO instead of EINVAL")
@pytest.mark.parametrize("data", ["abc", "", "\n", "x12"])
def test_non_numeric_write_is_einval(rcfs: Rcfs, data: str) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    result = rcfs.guest.write(f"{c}/tasks", data)
    assert (result.failed_step, result.errno) == ("write", "EINVAL"), str(result)
    assert tasks_of(rcfs, c) == []
    assert attach_counts(rcfs.guest, c) == ["0\n"] * 3


def test_pid_that_does_not_exist_is_esrch(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    gone = rcfs.guest.spawn()
    rcfs.guest.kill(gone)
    for pid in (99999, gone):  # pid_max is 32768: 99999 never exists
        result = rcfs.attach(c, pid)
        assert (result.failed_step, result.errno) == ("write", "ESRCH"), f"{pid}: {result}"
    assert tasks_of(rcfs, c) == []
    assert attach_counts(rcfs.guest, c) == ["0\n"] * 3


def test_zombie_is_esrch(rcfs: Rcfs) -> None:
    """A task that has exited but is not reaped yet cannot be moved."""
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    # the shell forks a short-lived child, then execs sleep, which never reaps it
    parent = rcfs.guest.spawn("sh -c 'usleep 1 & exec sleep 100000'")
    zombie = int(rcfs.guest.sh(
        "for i in $(seq 200); do\n"
        "  for d in /proc/[0-9]*; do\n"
        "    { read -r s < $d/stat; } 2>/dev/null || continue\n"
        f"    case \"$s\" in *\") Z {parent} \"*) echo \"${{s%% *}}\"; exit 0;; esac\n"
        "  done\n"
        "  usleep 10000\n"
        "done; exit 1\n"
    ))
    result = rcfs.attach(c, zombie)
    assert (result.failed_step, result.errno) == ("write", "ESRCH"), str(result)
    assert tasks_of(rcfs, c) == []


@pytest.mark.parametrize("size", [4096, 4097, 65536])
def test_write_of_4096_bytes_or_more_is_e2big(rcfs: Rcfs, size: int) -> None:
    """One write(2) of ``size`` bytes (all "0": the writer, if it were parsed) is refused whole."""
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    result = rcfs.guest.write(f"{c}/tasks", "0", repeat=size)
    assert (result.failed_step, result.errno) == ("write", "E2BIG"), str(result)
    assert attach_counts(rcfs.guest, c) == ["0\n"] * 3


def test_write_of_4095_bytes_is_parsed(rcfs: Rcfs) -> None:
    """Just below the limit the write is parsed: 4095 "0"s are the number 0, the writer."""
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    result = rcfs.guest.write(f"{c}/tasks", "0", repeat=4095)
    assert result.ok, str(result)
    assert detail(result, "write") == "4095"
    assert attach_counts(rcfs.guest, c) == ["1\n"] * 3
    assert tasks_of(rcfs, c) == []  # the probe has exited


def test_several_hundred_tasks(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    guest = rcfs.guest
    pids = [int(x) for x in guest.sh(
        "for i in $(seq 300); do sleep 100000 </dev/null >/dev/null 2>&1 & echo $!; done").split()]
    try:
        assert len(set(pids)) == 300
        failed = guest.sh(f"for p in {' '.join(map(str, pids))}; do "
                          f"echo $p > {c}/tasks || echo \"failed $p\"; done 2>&1", timeout=120)
        assert failed == ""
        assert tasks_of(rcfs, c) == sorted(pids)
        assert not set(pids) & set(tasks_of(rcfs, top))
        assert attach_counts(guest, c) == ["300\n"] * 3
    finally:
        guest.sh(f"kill -9 {' '.join(map(str, pids))} 2>/dev/null; "
                 f"for p in {' '.join(map(str, pids))}; do "
                 "while [ -d /proc/$p ]; do usleep 10000; done; done", timeout=60)
    assert tasks_of(rcfs, c) == []


CHURN = """
rm -f /tmp/churn.started /tmp/churn.stop
sh -c 'echo 0 > {c}/tasks || exit 9; touch /tmp/churn.started; i=0
    while [ ! -e /tmp/churn.stop ] && [ $i -lt 5000 ]; do
        usleep 500 & usleep 1000 & ( : ) & wait; i=$((i + 1))
    done; echo "churned $i"' > /tmp/churn.out 2>&1 &
churn=$!
echo "churn $churn"
while [ ! -e /tmp/churn.started ] && kill -0 $churn 2>/dev/null; do usleep 1000; done
i=0
while [ $i -lt {reads} ]; do
    echo "== {c}"; cat {c}/tasks
    echo "== {top}"; cat {top}/tasks
    i=$((i + 1))
done
echo "== end"
touch /tmp/churn.stop
wait $churn; echo "churn-exit $?"
cat /tmp/churn.out
"""


def test_reading_while_tasks_come_and_go(rcfs: Rcfs) -> None:
    """A shell in the container forks and reaps children nonstop while its tasks are read.

    Every read must be well-formed (sorted unique pids, whole lines) and list
    the shell itself, which stays in the container throughout.
    """
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    out = rcfs.guest.sh(CHURN.format(c=c, top=top, reads=150), timeout=120)
    head, *parts = re.split(r"^== (.*)\n", out, flags=re.M)
    churn = int(head.split()[1])
    assert parts[-2] == "end"
    assert re.fullmatch(r"churn-exit 0\nchurned [1-9][0-9]*\n", parts[-1]), parts[-1]
    reads = list(zip(parts[:-2:2], parts[1:-2:2], strict=True))
    assert [path for path, _ in reads] == [c, top] * 150
    for path, text in reads:
        assert (churn in parse_tasks(text)) == (path == c), f"{path}: {text!r}"
    assert tasks_of(rcfs, c) == []


@pytest.mark.posted_bug("two hierarchies: a task in containers of both is listed by neither")
def test_task_in_two_hierarchies_listed_by_both(rcfs: Rcfs) -> None:
    top0, top1 = rcfs.mount("test0"), rcfs.mount("test1")
    a, b = rcfs.mkdir(f"{top0}/a"), rcfs.mkdir(f"{top1}/b")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(a, pid).ok
    assert tasks_of(rcfs, a) == [pid]
    assert rcfs.attach(b, pid).ok
    assert (tasks_of(rcfs, a), tasks_of(rcfs, b)) == ([pid], [pid])
    assert pid not in tasks_of(rcfs, top0) and pid not in tasks_of(rcfs, top1)
    rcfs.guest.kill(pid)
    assert (tasks_of(rcfs, a), tasks_of(rcfs, b)) == ([], [])


def dd(guest: GuestSession, path: str, args: str) -> tuple[int, str]:
    """busybox dd of ``path`` (lseeks for ``skip=``); its exit status and what it read."""
    result = guest.run(f"dd if={path} of=/tmp/dd.out {args} 2>/dev/null; echo \"rc=$?\"; "
                       "cat /tmp/dd.out; rm -f /tmp/dd.out")
    rc, _, content = result.stdout.partition("\n")
    return int(rc.removeprefix("rc=")), content


def test_read_at_offsets(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pids = [rcfs.guest.spawn() for _ in range(3)]
    for pid in pids:
        assert rcfs.attach(c, pid).ok
    text = "".join(f"{pid}\n" for pid in sorted(pids))
    assert dd(rcfs.guest, f"{c}/tasks", "bs=1 skip=2") == (0, text[2:])
    assert dd(rcfs.guest, f"{c}/tasks", "bs=2 skip=1 count=2") == (0, text[2:6])
    assert dd(rcfs.guest, f"{c}/tasks", f"bs=1 skip={len(text)}") == (0, "")
    for pid in pids:
        rcfs.guest.kill(pid)


@pytest.mark.posted_bug("tasks read at an offset past the end copies a negative length (kernel BUG)")
def test_read_past_end_is_eof(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(c, pid).ok
    assert dd(rcfs.guest, f"{c}/tasks", f"bs=1 skip={len(str(pid)) + 2} count=10") == (0, "")
    assert dd(rcfs.guest, f"{c}/tasks", "bs=1 skip=100000 count=10") == (0, "")
    assert dd(rcfs.guest, f"{top}/tasks", "bs=1 skip=100000 count=10") == (0, "")
    rcfs.guest.kill(pid)
