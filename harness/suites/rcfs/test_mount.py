"""Mounting rcfs: option parsing, hierarchies shared or disjoint, /proc/mounts, umount.

A mount names a set of subsystems (``-o test0,test1``; no data or ``all``:
every registered subsystem).  One set is one hierarchy: mounting the same set
again shows the same container tree; a set overlapping a different mounted set
is refused with EBUSY; disjoint sets are independent hierarchies.

Bug 3 of the posted patch (the second mount of an existing hierarchy returns
without taking ``s_umount``, which the VFS then releases: the semaphore is
unbalanced and the umount that drops the last reference blocks forever) makes
the final umount hang.  The tests that reach it umount with a short timeout
(``_umount``); a hang fails the test (xfail on the posted patch), and the
cleanup's own umount then fails, so the plugin replaces the VM.
"""

from __future__ import annotations

import pytest

from harness.plugin.guest import GuestSession, ProbeResult, Rcfs
from harness.suites.rcfs.rcfs_util import ALL
from harness.suites.rcfs.rcfs_util import expected_files as _expected_files
from harness.suites.rcfs.rcfs_util import files as _files
from harness.suites.rcfs.rcfs_util import mount_line as _mount_line
from harness.suites.rcfs.rcfs_util import mounted as _mounted

UMOUNT_TIMEOUT = 1.0  # an umount takes milliseconds; this only detects the bug-3 hang










def _umount(rcfs: Rcfs, path: str) -> ProbeResult:
    """umount(2) of ``path``, failing the test if it blocks (posted bug 3)."""
    probe = rcfs.umount(path, timeout=UMOUNT_TIMEOUT)
    if probe.timed_out:
        # the mount stays registered: the fixture's cleanup fails and the VM is replaced
        pytest.fail(f"umount {path} blocked for {UMOUNT_TIMEOUT:g}s (s_umount left unbalanced)")
    return probe


def _top_tasks_and_all_pids(guest: GuestSession, top: str) -> tuple[list[int], list[int]]:
    """The top container's tasks and /proc's pids, read by one shell without forking."""
    out = guest.sh(f"while read p; do echo $p; done < {top}/tasks; echo ---; echo /proc/[0-9]*")
    tasks, procs = out.split("---")
    return ([int(p) for p in tasks.split()],
            sorted(int(p.removeprefix("/proc/")) for p in procs.split()))


# --- option parsing ----------------------------------------------------------------


@pytest.mark.parametrize(("options", "names"), [
    (None, ALL),
    ("all", ALL),
    ("test0", ("test0",)),
    ("test1", ("test1",)),
    ("test0,test1", ("test0", "test1")),
    ("test1,test0", ("test0", "test1")),
    ("test0,test0", ("test0",)),
    ("test0,test1,test2", ALL),
    ("all,test0", ALL),
])
def test_mount_shows_files_of_named_subsystems(rcfs: Rcfs, options: str | None,
                                                names: tuple[str, ...]) -> None:
    """The top directory holds ``tasks`` and exactly the files of the mounted subsystems."""
    top = rcfs.mount(options)
    assert _files(rcfs.guest, top) == _expected_files(names)
    assert rcfs.containers(top) == []


@pytest.mark.parametrize(("options", "errno"), [
    ("foo", "ENOENT"),
    ("test0,foo", "ENOENT"),
    ("foo,test0", "ENOENT"),
    ("all,foo", "ENOENT"),
    ("ALL", "ENOENT"),
    ("test0 ", "ENOENT"),
    ("test3", "ENOENT"),
    # an empty element (or no subsystem at all) is malformed, not an unknown name
    ("test0,", "EINVAL"),
    (",test0", "EINVAL"),
    ("test0,,test1", "EINVAL"),
    ("", "EINVAL"),
    (",", "EINVAL"),
])
def test_mount_bad_options(rcfs: Rcfs, options: str, errno: str) -> None:
    path, result = rcfs.try_mount(options)
    assert result.errno == errno, f"mount -o {options!r}: {result}"
    assert result.failed_step == "mount"
    assert not _mounted(rcfs.guest, path)


def test_failed_mount_leaves_subsystems_free(rcfs: Rcfs) -> None:
    """A refused mount binds nothing: the subsystems it named mount afterwards."""
    _, result = rcfs.try_mount("test0,foo")
    assert result.errno == "ENOENT"
    top = rcfs.mount("test0")
    assert _files(rcfs.guest, top) == _expected_files(("test0",))


# --- several mounts -------------------------------------------------------------------


@pytest.mark.posted_bug("bug 3: a second mount of a hierarchy leaves s_umount unbalanced; "
                        "the last umount hangs")
def test_same_set_twice_shares_one_hierarchy(rcfs: Rcfs) -> None:
    guest = rcfs.guest
    first = rcfs.mount("test0,test1")
    second = rcfs.mount("test1,test0")  # the same set, named in another order
    assert _files(guest, second) == _expected_files(("test0", "test1"))

    rcfs.mkdir(f"{first}/c")
    assert rcfs.containers(second) == [f"{second}/c"]
    assert _files(guest, f"{second}/c") == _expected_files(("test0", "test1"))
    assert guest.read(f"{second}/c/test0.id") == guest.read(f"{first}/c/test0.id")
    assert guest.read(f"{second}/test1.id") == guest.read(f"{first}/test1.id")

    assert guest.probe("rmdir", f"{second}/c").ok
    assert rcfs.containers(first) == []

    assert _umount(rcfs, second).ok
    assert _files(guest, first) == _expected_files(("test0", "test1"))  # still mounted
    assert _umount(rcfs, first).ok
    assert not _mounted(guest, first)
    # the hierarchy is gone: a different, overlapping set mounts now
    top = rcfs.mount("test0")
    assert _files(guest, top) == _expected_files(("test0",))


@pytest.mark.parametrize("other", ["test0,test1", "test1,test0", "all", None])
def test_overlapping_set_is_busy(rcfs: Rcfs, other: str | None) -> None:
    """test0 is bound to a hierarchy: a different set containing it is refused."""
    top = rcfs.mount("test0")
    path, result = rcfs.try_mount(other)
    assert result.errno == "EBUSY", f"mount -o {other!r}: {result}"
    assert not _mounted(rcfs.guest, path)
    assert _files(rcfs.guest, top) == _expected_files(("test0",))


def test_overlapping_superset_is_busy(rcfs: Rcfs) -> None:
    """test0,test1 is mounted: test0 alone (a subset) is another set and is refused too."""
    rcfs.mount("test0,test1")
    for options in ("test0", "test1", "test1,test2"):
        path, result = rcfs.try_mount(options)
        assert result.errno == "EBUSY", f"mount -o {options!r}: {result}"
    # the free subsystem still mounts on its own
    assert _files(rcfs.guest, rcfs.mount("test2")) == _expected_files(("test2",))


def test_disjoint_sets_are_independent_hierarchies(rcfs: Rcfs) -> None:
    guest = rcfs.guest
    a = rcfs.mount("test0")
    b = rcfs.mount("test1")
    assert _files(guest, a) == _expected_files(("test0",))
    assert _files(guest, b) == _expected_files(("test1",))

    rcfs.mkdir(f"{a}/x")
    rcfs.mkdir(f"{b}/y")
    rcfs.mkdir(f"{b}/y/z")
    assert rcfs.containers(a) == [f"{a}/x"]
    assert rcfs.containers(b) == [f"{b}/y/z", f"{b}/y"]
    assert _files(guest, f"{a}/x") == _expected_files(("test0",))
    assert _files(guest, f"{b}/y/z") == _expected_files(("test1",))

    # removing a container of one hierarchy does not touch the other
    assert guest.probe("rmdir", f"{a}/x").ok
    assert rcfs.containers(b) == [f"{b}/y/z", f"{b}/y"]
    # nor does unmounting it (b has children, a has none)
    assert _umount(rcfs, a).ok
    assert rcfs.containers(b) == [f"{b}/y/z", f"{b}/y"]
    assert _files(guest, b) == _expected_files(("test1",), children=("y",))


# --- /proc/mounts -----------------------------------------------------------------------


@pytest.mark.posted_bug("bug 6: /proc/mounts runs the subsystem names together without commas")
def test_proc_mounts_lists_rcfs(rcfs: Rcfs) -> None:
    """Device, mountpoint and type as given; the first option is ``rw``, on its own."""
    top = rcfs.mount("test0")
    fields = _mount_line(rcfs.guest, top)
    assert fields[0] == "none"
    assert fields[2] == "rcfs"
    assert fields[3].split(",")[0] == "rw"
    assert fields[4:] == ["0", "0"]


@pytest.mark.posted_bug("bug 6: /proc/mounts runs the subsystem names together without commas")
@pytest.mark.parametrize(("options", "names"), [
    (None, ALL),
    ("test1", ("test1",)),
    ("test2,test0", ("test0", "test2")),
])
def test_proc_mounts_options_name_subsystems(rcfs: Rcfs, options: str | None,
                                             names: tuple[str, ...]) -> None:
    """The options field is ``rw`` then each subsystem name, comma-separated (any order)."""
    top = rcfs.mount(options)
    fields = _mount_line(rcfs.guest, top)
    assert fields[2] == "rcfs"
    words = fields[3].split(",")
    assert words[0] == "rw", fields[3]
    assert sorted(words[1:]) == list(names), fields[3]


# --- umount -----------------------------------------------------------------------------


def test_umount_and_mount_again(rcfs: Rcfs) -> None:
    """A hierarchy without children ends at umount: mounting again gives the same files and a
    top container holding every task, and the subsystems are free for another set."""
    guest = rcfs.guest
    top = rcfs.mount("test0")
    rcfs.mkdir(f"{top}/c")
    assert guest.probe("rmdir", f"{top}/c").ok
    assert rcfs.umount(top).ok
    assert not _mounted(guest, top)

    sleeper = guest.spawn()
    again = rcfs.mount("test0")
    assert _files(guest, again) == _expected_files(("test0",))
    assert rcfs.containers(again) == []
    tasks, pids = _top_tasks_and_all_pids(guest, again)
    assert tasks == pids
    assert sleeper in tasks and 1 in tasks

    assert rcfs.umount(again).ok
    # the old set is released: an overlapping different set mounts
    other = rcfs.mount("test0,test1")
    assert _files(guest, other) == _expected_files(("test0", "test1"))


@pytest.mark.posted_bug("bug 3: mounting a hierarchy kept alive by a child container leaves "
                        "s_umount unbalanced; the last umount hangs")
def test_umount_with_child_keeps_hierarchy(rcfs: Rcfs) -> None:
    """Child containers keep an unmounted hierarchy alive: its subsystems stay bound (another
    set using them is refused, EBUSY), and mounting the same set again shows the children.
    Once the children are removed, umount ends the hierarchy."""
    guest = rcfs.guest
    top = rcfs.mount("test0")
    rcfs.mkdir(f"{top}/c")
    rcfs.mkdir(f"{top}/c/d")
    child_id = guest.read(f"{top}/c/test0.id")
    assert rcfs.umount(top).ok
    assert not _mounted(guest, top)

    _, result = rcfs.try_mount("test0,test1")
    assert result.errno == "EBUSY", f"mount -o test0,test1 with test0's hierarchy alive: {result}"
    other = rcfs.mount("test1")  # disjoint: fine
    assert _umount(rcfs, other).ok

    again = rcfs.mount("test0")
    assert rcfs.containers(again) == [f"{again}/c/d", f"{again}/c"]
    assert guest.read(f"{again}/c/test0.id") == child_id
    tasks, pids = _top_tasks_and_all_pids(guest, again)
    assert tasks == pids

    assert guest.probe("rmdir", f"{again}/c/d").ok
    assert guest.probe("rmdir", f"{again}/c").ok
    assert _umount(rcfs, again).ok
    # the hierarchy ended: test0 is free for another set, and has no children
    fresh = rcfs.mount("test0,test1")
    assert rcfs.containers(fresh) == []

