"""Which kernel a test of the suite runs on: its ``kernel`` mark and the session's options."""

from __future__ import annotations

from typing import Any

import pytest

from harness.run.target import KernelSpec

KERNEL_FIXTURES = frozenset({"guest", "rcfs", "kernel_vm"})


def _overrides(pairs: dict[str, Any] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``SYMBOL=VALUE`` strings in one order (by symbol), from a ``set=`` dict or option strings."""
    if isinstance(pairs, dict):
        items = [(str(k), str(v)) for k, v in pairs.items()]
    else:
        items = [(k, v) for k, _, v in (p.partition("=") for p in pairs)]
    return tuple(f"{k}={v}" for k, v in sorted(items))


def spec_for(item: pytest.Item) -> KernelSpec:
    config = item.config
    marker = item.get_closest_marker("kernel")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    return KernelSpec(
        config=kwargs.get("config") or config.getoption("--kernel-config"),
        series=kwargs.get("series") or config.getoption("--kernel-series"),
        overrides=_overrides(kwargs.get("set") or {}),
        kernel_src=config.getoption("--kernel-src"),
    )


def cell_spec(config: pytest.Config) -> KernelSpec:
    """The one kernel of a ``--kernel-cell`` session."""
    return KernelSpec(config=config.getoption("--kernel-config"), series=config.getoption("--kernel-series"),
                      overrides=_overrides(config.getoption("--kernel-set")),
                      kernel_src=config.getoption("--kernel-src"))


def needs_kernel(item: pytest.Item) -> bool:
    return bool(KERNEL_FIXTURES & set(getattr(item, "fixturenames", ())))


def marked_config(item: pytest.Item) -> str:
    marker = item.get_closest_marker("kernel")
    return (marker.kwargs.get("config") if marker else None) or "default"


def in_cell(item: pytest.Item, config: pytest.Config) -> bool:
    """Does ``item`` run on exactly the kernel of the ``--kernel-cell`` session (config, series, set=)?"""
    return (needs_kernel(item) and marked_config(item) == config.getoption("--kernel-config")
            and spec_for(item) == cell_spec(config))
