from __future__ import annotations

import io
import time

import pytest

from harness import progress


def test_quick_step_prints_nothing() -> None:
    out = io.StringIO()
    with progress.step("quick", out):
        pass
    assert out.getvalue() == ""


def test_long_step_prints_start_update_and_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    out = io.StringIO()
    with progress.step("build x", out) as s:
        s.interval = 0.0
        s.update("CC kernel/rcfs.o")
        time.sleep(1.2)
    lines = out.getvalue().splitlines()
    assert lines[0] == "==> build x"
    assert any("CC kernel/rcfs.o" in line for line in lines[1:-1])
    assert lines[-1].startswith("==> build x: done in ")


def test_failed_step_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "QUIET_FOR", 0.0)
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress.step("boot", out):
        time.sleep(0.7)
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("==> boot: FAILED in ")
