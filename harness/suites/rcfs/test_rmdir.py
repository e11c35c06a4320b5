"""Creating and removing containers: nesting, when rmdir is refused, removing files.

A container can be removed once it has neither tasks nor child containers;
a task that moved out or exited must no longer count.  The top container
(the mount point) and the control files cannot be removed.
"""

from __future__ import annotations

import pytest

from harness.plugin.guest import GuestSession, Rcfs

SUBSYSTEMS = ("test0", "test1", "test2")
FILES = sorted(["tasks"] + [f"{ss}.{f}" for ss in SUBSYSTEMS for f in ("id", "deny_attach", "attach_count")])

# strerror() texts of the guest's C library (musl), for tools that only print those
STRERROR = {
    "Operation not permitted": "EPERM",
    "Permission denied": "EACCES",
    "Resource busy": "EBUSY",
    "Device or resource busy": "EBUSY",
    "Is a directory": "EISDIR",
    "Not a directory": "ENOTDIR",
    "Directory not empty": "ENOTEMPTY",
    "No such file or directory": "ENOENT",
    "Invalid argument": "EINVAL",
}


def listing(guest: GuestSession, path: str) -> list[str]:
    return sorted(guest.sh(f"ls -a {path}").split())


def exists(guest: GuestSession, path: str) -> bool:
    return guest.run(f"test -e {path}").exit_status == 0


def ids(guest: GuestSession, container: str) -> list[str]:
    return [guest.read(f"{container}/{ss}.id").strip() for ss in SUBSYSTEMS]


def unlink_errno(guest: GuestSession, path: str) -> str | None:
    """unlink(2) with busybox ``unlink``; None on success, else the errno name."""
    result = guest.run(["unlink", path])
    if result.exit_status == 0:
        return None
    message = result.stderr.strip().rsplit(": ", 1)[-1]
    assert message in STRERROR, f"unlink {path}: {result.stderr!r}"
    return STRERROR[message]


def test_nested_containers(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    a = rcfs.mkdir(f"{top}/a")
    b = rcfs.mkdir(f"{a}/b")
    c = rcfs.mkdir(f"{b}/c")
    g = rcfs.guest
    assert listing(g, a) == sorted([".", "..", "b", *FILES])
    assert listing(g, b) == sorted([".", "..", "c", *FILES])
    assert listing(g, c) == sorted([".", "..", *FILES])
    for container in (a, b, c):
        assert rcfs.tasks_text(container) == ""
        for ss in SUBSYSTEMS:
            assert g.read(f"{container}/{ss}.deny_attach") == "0\n"
            assert g.read(f"{container}/{ss}.attach_count") == "0\n"
    # every container has its own state in every subsystem
    all_ids = [ids(g, d) for d in (top, a, b, c)]
    for column in zip(*all_ids, strict=True):
        assert len(set(column)) == 4, all_ids
    # and a task can live at any depth
    pid = g.spawn()
    assert rcfs.attach(c, pid).ok
    assert rcfs.tasks(c) == [pid]
    assert (rcfs.tasks(a), rcfs.tasks(b)) == ([], [])
    g.kill(pid)


def test_rmdir_empty_container(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    old_ids = ids(rcfs.guest, c)
    result = rcfs.guest.probe("rmdir", c)
    assert result.ok, str(result)
    assert not exists(rcfs.guest, c)
    assert listing(rcfs.guest, top) == sorted([".", "..", *FILES])
    # the name can be used again, for a new container
    rcfs.mkdir(c)
    assert listing(rcfs.guest, c) == sorted([".", "..", *FILES])
    assert set(ids(rcfs.guest, c)).isdisjoint(old_ids)


def test_rmdir_nested_deepest_first(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    a = rcfs.mkdir(f"{top}/a")
    b = rcfs.mkdir(f"{a}/b")
    c = rcfs.mkdir(f"{b}/c")
    for path in (c, b, a):
        result = rcfs.guest.probe("rmdir", path)
        assert result.ok, f"{path}: {result}"
        assert not exists(rcfs.guest, path)
    assert rcfs.containers(top) == []


def test_rmdir_with_task_is_ebusy(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(c, pid).ok
    result = rcfs.guest.probe("rmdir", c)
    assert result.errno == "EBUSY", str(result)
    assert listing(rcfs.guest, c) == sorted([".", "..", *FILES])
    assert rcfs.tasks(c) == [pid]
    rcfs.guest.kill(pid)


def test_rmdir_with_child_container_is_ebusy(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    a = rcfs.mkdir(f"{top}/a")
    b = rcfs.mkdir(f"{a}/b")
    result = rcfs.guest.probe("rmdir", a)
    assert result.errno == "EBUSY", str(result)
    assert listing(rcfs.guest, a) == sorted([".", "..", "b", *FILES])
    assert listing(rcfs.guest, b) == sorted([".", "..", *FILES])
    # once the child is gone the parent can go
    assert rcfs.guest.probe("rmdir", b).ok
    result = rcfs.guest.probe("rmdir", a)
    assert result.ok, str(result)


def test_rmdir_after_task_exited(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(c, pid).ok
    rcfs.guest.kill(pid)
    assert rcfs.tasks(c) == []
    result = rcfs.guest.probe("rmdir", c)
    assert result.ok, str(result)
    assert not exists(rcfs.guest, c)


def test_rmdir_after_writer_moved_itself_in_and_exited(rcfs: Rcfs) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    # the shell moves itself in (builtin echo: it is the writer), then lists the container
    # with builtins only: it must be there, alone; then it exits
    inside = rcfs.guest.sh(f"echo 0 > {c}/tasks || exit 9\n"
                           f"echo $$; while read -r p; do echo \"in $p\"; done < {c}/tasks").split()
    assert inside == [inside[0], "in", inside[0]], inside
    assert rcfs.tasks(c) == []
    result = rcfs.guest.probe("rmdir", c)
    assert result.ok, str(result)


@pytest.mark.posted_bug("a container a task has left stays busy: rmdir is EBUSY forever")
@pytest.mark.parametrize("destination", ["top", "sibling"])
def test_rmdir_after_task_moved_out(rcfs: Rcfs, destination: str) -> None:
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    other = top if destination == "top" else rcfs.mkdir(f"{top}/other")
    pid = rcfs.guest.spawn()
    assert rcfs.attach(c, pid).ok
    assert rcfs.attach(other, pid).ok
    assert rcfs.tasks(c) == []
    assert pid in rcfs.tasks(other)
    result = rcfs.guest.probe("rmdir", c)
    assert result.ok, str(result)
    assert not exists(rcfs.guest, c)
    if destination == "sibling":
        assert rcfs.guest.probe("rmdir", other).errno == "EBUSY"


def test_rmdir_top_is_ebusy(rcfs: Rcfs) -> None:
    """rmdir of the mount point: the VFS refuses it (a mount point is busy)."""
    top = rcfs.mount()
    result = rcfs.guest.probe("rmdir", top)
    assert result.errno == "EBUSY", str(result)
    assert top in rcfs.guest.sh("cut -d' ' -f2 /proc/mounts").split()
    assert listing(rcfs.guest, top) == sorted([".", "..", *FILES])
    assert 1 in rcfs.tasks(top)


@pytest.mark.parametrize("name", ["tasks", "test0.id", "test1.deny_attach", "test2.attach_count"])
def test_unlink_control_file_is_eperm(rcfs: Rcfs, name: str) -> None:
    """rcfs has no unlink: removing a control file is refused with EPERM (as root)."""
    top = rcfs.mount()
    c = rcfs.mkdir(f"{top}/c")
    for container, subdirs in ((top, ["c"]), (c, [])):
        assert unlink_errno(rcfs.guest, f"{container}/{name}") == "EPERM"
        assert listing(rcfs.guest, container) == sorted([".", "..", *FILES, *subdirs])
    assert rcfs.tasks_text(c) == ""
    assert rcfs.guest.read(f"{c}/test0.attach_count") == "0\n"
