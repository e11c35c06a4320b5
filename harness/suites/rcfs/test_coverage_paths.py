"""Paths of the patch the rest of the suite never ran (found with ``harness test --coverage``).

* a write to a control file that has no write handler;
* control files kept open across the rmdir of their container: reads, writes
  and an attach through them fail with ENODEV, nothing is attached to the
  removed container, and the kernel stays healthy (on ``debug``, whose slab
  poisoning catches the posted patch's use after free at once);
* clone(CLONE_NEWNS) by a task in a container: the child's new nsproxy is put
  on the list the patch keeps (``copy_namespaces``), and taken off at exit
  (on ``debug``, whose list debugging catches the posted patch's corruption).
"""

from __future__ import annotations

import shlex

import pytest

from harness.plugin.guest import Rcfs


def test_write_to_a_read_only_control_file_is_einval(rcfs: Rcfs) -> None:
    """``testN.id`` and ``testN.attach_count`` have no write handler: write(2) fails with EINVAL
    and the value stays."""
    top = rcfs.mount("test0")
    for name in ("test0.id", "test0.attach_count"):
        before = rcfs.guest.read(f"{top}/{name}")
        result = rcfs.guest.write(f"{top}/{name}", "7\n")
        assert result.step("open") is not None and result.step("open").ok, str(result)  # type: ignore[union-attr]
        assert result.errno == "EINVAL", f"{name}: {result}"
        assert rcfs.guest.read(f"{top}/{name}") == before


# Holds the files open (fds 3, 4, 5), removes the container, then uses them: one line per step.
_STALE = r"""
exec 3<"$C/test0.id" 4>"$C/test0.deny_attach" 5>"$C/tasks"
rmdir "$C" && echo "rmdir OK" || echo "rmdir FAILED"
if cat <&3 >/dev/null 2>/tmp/stale.err; then echo "read OK"; else echo "read FAILED $(cat /tmp/stale.err)"; fi
if echo 5 >&4 2>/tmp/stale.err; then echo "write OK"; else echo "write FAILED $(cat /tmp/stale.err)"; fi
if echo "$P" >&5 2>/tmp/stale.err; then echo "attach OK"; else echo "attach FAILED $(cat /tmp/stale.err)"; fi
exec 3<&- 4>&- 5>&-
"""


@pytest.mark.kernel(config="debug")  # slab poisoning catches the use after free when it happens
@pytest.mark.posted_bug("a container removed while its control files are open is used after it is "
                        "freed once they are closed: slab poison (6b6b6b6b) dereferenced by the next "
                        "attach or umount (on default, a NULL RCU callback oopses a later test)")
def test_control_files_kept_open_across_rmdir_fail_with_enodev(rcfs: Rcfs) -> None:
    """After the rmdir of a container, its control files still open in a process fail: a read or
    a write of a subsystem's file with ENODEV (the subsystem's state is gone), and a pid written
    to its ``tasks`` with ENODEV too: no task may join a removed container."""
    top = rcfs.mount("test0")
    container = rcfs.mkdir(f"{top}/gone")
    pid = rcfs.guest.spawn()
    out = rcfs.guest.sh(f"C={shlex.quote(container)} P={pid}\n{_STALE}")
    lines = out.splitlines()
    assert lines[0] == "rmdir OK", out
    for step, line in zip(("read", "write", "attach"), lines[1:4], strict=True):
        assert line.startswith(f"{step} FAILED") and "No such device" in line, out
    assert pid in rcfs.tasks(top)  # still in the top container
    assert rcfs.containers(top) == []
    # what the fixture's cleanup would do after the test (kill, attach back, umount), here, so
    # that a kernel report it causes belongs to this test
    rcfs.guest.cleanup()
    assert rcfs.cleanup() == []


# The shell moves itself into the container, then becomes rcfs-probe, which clones a child with
# a new mount namespace (the child exits at once) and reports.
_CLONE = 'echo $$ > "$C/tasks" && exec rcfs-probe clone ns'


@pytest.mark.kernel(config="debug")  # CONFIG_DEBUG_LIST reports the corruption the posted patch makes
@pytest.mark.posted_bug("an nsproxy made by clone() is not put on the nsproxy list, but its exit "
                        "deletes it from the list: list corruption")
def test_clone_with_a_new_mount_namespace_in_a_container(rcfs: Rcfs) -> None:
    """A task in a container clones a child with CLONE_NEWNS: the clone succeeds, the child exits
    cleanly (its nsproxy leaves the list it was put on), and the container can then be removed."""
    top = rcfs.mount("test0")
    container = rcfs.mkdir(f"{top}/cloner")
    result = rcfs.guest.run(f"C={shlex.quote(container)}\n{_CLONE}")
    assert "clone: OK" in result.stdout and "wait: OK 0" in result.stdout, result
    assert result.exit_status == 0, result
    assert rcfs.tasks(container) == []
    assert rcfs.guest.probe("rmdir", container).ok
