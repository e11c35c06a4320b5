"""rcfs limits: CONFIG_MAX_RC_SUBSYS, CONFIG_MAX_RC_HIERARCHIES and a kernel without rcfs.

Kernels (kernel-configs/configs.toml): ``few-subsys`` has MAX_RC_SUBSYS=2 with the 3
test subsystems, so registering test2 fails; ``small-hier`` has MAX_RC_HIERARCHIES=2,
the minimum Kconfig allows; ``norcfs`` has CONFIG_RCFS off (and so no test subsystems).
The plugin fails a test whose kernel printed an Oops/BUG/WARNING/lockdep report; the
limit tests also check by hand that the kernel still works after hitting the limit.
"""

from __future__ import annotations

import pytest

from harness.plugin.guest import GuestSession, Rcfs
from harness.suites.rcfs.rcfs_util import expected_files as _expected_files
from harness.suites.rcfs.rcfs_util import files as _files
from harness.suites.rcfs.rcfs_util import mounted as _mounted

FEW_SUBSYS = pytest.mark.kernel(config="few-subsys")
SMALL_HIER = pytest.mark.kernel(config="small-hier")
NORCFS = pytest.mark.kernel(config="norcfs")

BAD_KERNEL_WORDS = ("Oops", "BUG:", "kernel BUG", "WARNING:", "Call Trace", "INFO: ",
                    "Kernel panic", "bad unlock balance", "circular locking")








def _log_mark(guest: GuestSession, name: str) -> str:
    """Write a marker line into the kernel log; :func:`_log_since` reads what follows it."""
    marker = f"rcfs-suite-mark {name}"
    guest.sh(f"echo '{marker}' > /dev/kmsg")
    return marker


def _log_since(guest: GuestSession, marker: str) -> list[str]:
    lines = guest.sh("dmesg").splitlines()
    starts = [i for i, line in enumerate(lines) if marker in line]
    assert starts, f"marker {marker!r} no longer in dmesg"
    return lines[starts[-1] + 1:]


def _assert_healthy(rcfs: Rcfs, marker: str, options: str) -> None:
    """The kernel still works: a hierarchy mounts, a container is made and removed, it
    unmounts; and nothing alarming was logged since ``marker``."""
    guest = rcfs.guest
    top = rcfs.mount(options)
    rcfs.mkdir(f"{top}/healthy")
    assert rcfs.containers(top) == [f"{top}/healthy"]
    assert guest.probe("rmdir", f"{top}/healthy").ok
    assert rcfs.umount(top).ok
    assert not _mounted(guest, top)
    bad = [line for line in _log_since(guest, marker) if any(w in line for w in BAD_KERNEL_WORDS)]
    assert bad == []


# --- MAX_RC_SUBSYS ---------------------------------------------------------------------


@FEW_SUBSYS
def test_subsys_beyond_limit_is_refused_at_registration(guest: GuestSession) -> None:
    """MAX_RC_SUBSYS=2: test0 and test1 register, test2 gets -ENOSPC, logged at boot."""
    lines = [line for line in guest.sh("dmesg").splitlines() if line.startswith("rcfs_testss:")]
    assert lines == [
        "rcfs_testss: registered test0 as subsys_id 0",
        "rcfs_testss: registered test1 as subsys_id 1",
        "rcfs_testss: registering test2 failed: -28",
    ]


@FEW_SUBSYS
@pytest.mark.parametrize(("options", "names"), [
    ("test0", ("test0",)),
    ("test1", ("test1",)),
    ("test0,test1", ("test0", "test1")),
    (None, ("test0", "test1")),
    ("all", ("test0", "test1")),
])
def test_registered_subsys_mount_with_few_subsys(rcfs: Rcfs, options: str | None,
                                                 names: tuple[str, ...]) -> None:
    """The registered subsystems mount; ``all`` means the two registered ones."""
    marker = _log_mark(rcfs.guest, "few-subsys-mount")
    top = rcfs.mount(options)
    assert _files(rcfs.guest, top) == _expected_files(names)
    assert rcfs.umount(top).ok
    _assert_healthy(rcfs, marker, "all")


@FEW_SUBSYS
@pytest.mark.parametrize("options", ["test2", "test0,test2", "test2,test1", "all,test2"])
def test_unregistered_subsys_is_unknown(rcfs: Rcfs, options: str) -> None:
    """test2 never registered: naming it is an unknown name (ENOENT), and binds nothing."""
    marker = _log_mark(rcfs.guest, "few-subsys-unknown")
    path, result = rcfs.try_mount(options)
    assert result.errno == "ENOENT", f"mount -o {options!r}: {result}"
    assert not _mounted(rcfs.guest, path)
    _assert_healthy(rcfs, marker, "test0,test1")


# --- MAX_RC_HIERARCHIES ------------------------------------------------------------------


@SMALL_HIER
def test_hierarchies_beyond_limit_are_refused(rcfs: Rcfs) -> None:
    """MAX_RC_HIERARCHIES=2: two distinct hierarchies can be mounted at once; a third
    distinct set gets ENOSPC (the table of hierarchies is full).

    Decision: the limit counts mountable (active) hierarchies only, not a "default"
    hierarchy.  In this patch the unmounted state is no hierarchy: unbound subsystems
    keep their top-container state in init_nsproxy and take no slot of rootnode[], and
    the Kconfig help ("Number of rcfs hierarchies to support") describes what a user can
    mount.  So the minimum (2) allows exactly 2 hierarchies at once.  Freeing a slot (umount
    of a hierarchy without children) lets the third set mount.
    """
    guest = rcfs.guest
    marker = _log_mark(guest, "small-hier-limit")
    first = rcfs.mount("test0")
    second = rcfs.mount("test1")
    path, result = rcfs.try_mount("test2")
    assert result.errno == "ENOSPC", f"third hierarchy: {result}"
    assert not _mounted(guest, path)
    # a set overlapping a mounted one is still refused as a clash, not for lack of space
    _, result = rcfs.try_mount("test1,test2")
    assert result.errno == "EBUSY", f"overlapping set: {result}"
    # the mounted hierarchies are unaffected
    assert _files(guest, first) == _expected_files(("test0",))
    assert _files(guest, second) == _expected_files(("test1",))

    assert rcfs.umount(first).ok
    third = rcfs.mount("test2")
    assert _files(guest, third) == _expected_files(("test2",))
    path, result = rcfs.try_mount("test0")
    assert result.errno == "ENOSPC", f"third hierarchy again: {result}"
    assert rcfs.umount(third).ok
    assert rcfs.umount(second).ok
    _assert_healthy(rcfs, marker, "all")


@SMALL_HIER
def test_one_hierarchy_of_all_subsys_fits(rcfs: Rcfs) -> None:
    """The limit counts hierarchies, not subsystems: all three in one hierarchy is one."""
    marker = _log_mark(rcfs.guest, "small-hier-all")
    top = rcfs.mount("all")
    assert _files(rcfs.guest, top) == _expected_files(("test0", "test1", "test2"))
    assert rcfs.umount(top).ok
    # and the two-hierarchy maximum is reachable with a two-subsystem set
    a = rcfs.mount("test0,test2")
    b = rcfs.mount("test1")
    assert _files(rcfs.guest, a) == _expected_files(("test0", "test2"))
    assert _files(rcfs.guest, b) == _expected_files(("test1",))
    assert rcfs.umount(a).ok
    assert rcfs.umount(b).ok
    _assert_healthy(rcfs, marker, "test1")


def test_default_kernel_cannot_exceed_hierarchy_limit(rcfs: Rcfs) -> None:
    """On the default kernel MAX_RC_HIERARCHIES=4 but only 3 test subsystems exist, and each
    hierarchy needs at least one subsystem of its own: at most 3 distinct hierarchies, all
    of which mount.  Exceeding the limit is tested on small-hier
    (test_hierarchies_beyond_limit_are_refused)."""
    marker = _log_mark(rcfs.guest, "default-hier")
    tops = [rcfs.mount(name) for name in ("test0", "test1", "test2")]
    for top, name in zip(tops, ("test0", "test1", "test2"), strict=True):
        assert _files(rcfs.guest, top) == _expected_files((name,))
    # no fourth distinct set can be named: every set overlaps a mounted one
    for options in ("all", "test0,test1", None):
        _, result = rcfs.try_mount(options)
        assert result.errno == "EBUSY", f"mount -o {options!r}: {result}"
    for top in tops:
        assert rcfs.umount(top).ok
    _assert_healthy(rcfs, marker, "all")


# --- no rcfs -----------------------------------------------------------------------------


@NORCFS
def test_no_rcfs_filesystem(guest: GuestSession) -> None:
    filesystems = [line.split()[-1] for line in guest.read("/proc/filesystems").splitlines()
                   if line.split()]
    assert "proc" in filesystems  # the file was read
    assert "rcfs" not in filesystems


@NORCFS
@pytest.mark.parametrize("options", [None, "all", "test0"])
def test_mount_without_rcfs_is_enodev(rcfs: Rcfs, options: str | None) -> None:
    path, result = rcfs.try_mount(options)
    assert result.errno == "ENODEV", f"mount -o {options!r}: {result}"
    assert result.failed_step == "mount"
    assert not _mounted(rcfs.guest, path)
