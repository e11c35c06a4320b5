"""Shared fixtures: every test gets its own empty cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                   request: pytest.FixtureRequest) -> Path | None:
    """Unit tests never touch the user's cache; target tests use the real one."""
    if request.node.get_closest_marker("target"):
        return None
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HARNESS_CACHE", str(path))
    monkeypatch.delenv("HARNESS_KERNEL_SRC", raising=False)
    return path
