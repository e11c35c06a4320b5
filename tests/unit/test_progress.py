"""harness.progress: long steps say what they do, quick ones stay silent (no clock in the asserts)."""

from __future__ import annotations

import io

import pytest

from harness import progress


def test_quick_step_prints_nothing() -> None:
    out = io.StringIO()
    with progress.step("quick", out):
        pass
    assert out.getvalue() == ""


def test_a_step_past_the_quiet_time_prints_start_updates_and_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticker's work, driven by hand: first the title, then the latest detail, then done."""
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    out = io.StringIO()
    with progress.step("build x", out) as s:
        s.interval = 0.0
        s._tick(tty=False)
        s.update("CC kernel/rcfs.o")
        s._tick(tty=False)
    lines = out.getvalue().splitlines()
    assert lines[0] == "==> build x"
    assert lines[1].endswith("build x: ... CC kernel/rcfs.o")
    assert lines[-1].startswith("==> build x: done in ")


def test_failed_step_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress.step("boot", out) as s:
        s._tick(tty=False)
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("==> boot: FAILED in ")


def test_within_the_quiet_time_nothing_is_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "QUIET_FOR", 3600.0)
    out = io.StringIO()
    with progress.step("short", out) as s:
        s._tick(tty=False)
    assert out.getvalue() == ""
