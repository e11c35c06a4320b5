"""The probe that ``tests/target/test_bisect_target.py`` bisects with.

rmdir of a container that still has a task attached must fail with EBUSY.
Self-contained on purpose (only the ``rcfs``/``guest`` fixtures), so the bisect
tests do not depend on the rcfs suite.  It also runs as an ordinary target
test against the default kernel (rcfs-testss/default).
"""

from __future__ import annotations

from harness.plugin.guest import GuestSession, Rcfs


def test_rmdir_with_task_attached_is_ebusy(rcfs: Rcfs, guest: GuestSession) -> None:
    top = rcfs.mount()
    child = rcfs.mkdir(f"{top}/busy")
    pid = guest.spawn("sleep 100000")
    attached = rcfs.attach(child, pid)
    assert attached.ok, f"attaching {pid} to {child}: {attached}"
    assert pid in rcfs.tasks(child)
    result = guest.probe("rmdir", child)
    assert result.errno == "EBUSY", (
        f"rmdir {child} with task {pid} attached: expected EBUSY, got {result}")
