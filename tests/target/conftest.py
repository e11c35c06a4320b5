"""Target tests need a real Linux 2.6.20 source; without one they skip, saying how to get one."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.source import Source, resolve


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/target/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.target)


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
