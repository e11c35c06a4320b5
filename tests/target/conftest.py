"""Everything under tests/target/ needs a real kernel and is marked `target`."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/target/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.target)
