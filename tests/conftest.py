"""Shared fixtures: every test gets its own empty cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernel.source import Source, resolve

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


@pytest.fixture(scope="session")
def kernel_source() -> Source:
    """The cached pristine 2.6.20 tree ($HARNESS_KERNEL_SRC, cached tarball or tree); never downloads."""
    try:
        return resolve(None, allow_download=False)
    except HarnessError as exc:
        pytest.skip(
            f"{exc}. Run `make test-kernel` once (it downloads and caches linux-2.6.20.tar.bz2) "
            "or set HARNESS_KERNEL_SRC"
        )


TARGET_DIRS = ("tests/target/", "harness/suites/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path).replace("\\", "/")
        if any(d in path for d in TARGET_DIRS):
            item.add_marker(pytest.mark.target)


@pytest.fixture(scope="module")
def junit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUnit file from a real pytest run of tests/data/report/guest_suite.py."""
    from tests.report_sample import make_junit

    return make_junit(tmp_path_factory.mktemp("guest"))
