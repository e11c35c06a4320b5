"""The rcfs suite: runs in the booted guest (see harness/plugin).

``@pytest.mark.posted_bug("...")`` marks behaviour that the posted patch gets
wrong: on a series without ``rcfs-fixes`` the test is ``xfail(strict=True)``
with that reason, so it must fail there and pass with the fixes.
"""

from __future__ import annotations

import functools

import pytest

from harness.kernel.patches import load_series
from harness.plugin.specs import spec_for


@functools.cache
def _has_fixes(series: str) -> bool:
    return "rcfs-fixes" in load_series(series).chain


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("posted_bug")
        if marker is None:
            continue
        if not _has_fixes(spec_for(item).series):
            reason = marker.args[0] if marker.args else "bug in the posted rcfs patch"
            item.add_marker(pytest.mark.xfail(reason=f"posted patch: {reason}", strict=True))


@pytest.fixture
def with_fixes(request: pytest.FixtureRequest) -> bool:
    """Is the kernel under test built with the harness's rcfs-fixes series?"""
    return _has_fixes(spec_for(request.node).series)
