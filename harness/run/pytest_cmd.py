"""The one place that builds a pytest command line for a suite run in a child process."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from harness import resources


def suite_settings(suite: Path) -> list[str]:
    """``-c``/``--rootdir`` for a suite with its own ``pytest.ini``, so that no pytest
    configuration of the caller's folder applies to it."""
    ini = suite / "pytest.ini"
    return ["-c", str(ini), "--rootdir", str(suite)] if ini.is_file() else []


def resolve_nodeid(nodeid: str, cwd: Path | None = None) -> tuple[str, Path | None]:
    """``nodeid`` as pytest should get it, and the shipped suite it belongs to (if any).

    A node id whose file exists (relative to ``cwd``) is used as it is; one that
    names a file of the shipped rcfs suite (``test_rmdir.py::test_x``, or with
    a ``tests/rcfs/`` or ``harness/suites/rcfs/`` prefix) is made absolute.
    """
    path, sep, rest = nodeid.partition("::")
    base = cwd or Path.cwd()
    if (base / path).exists():
        suite = resources.suite("rcfs")
        absolute = (base / path).resolve()
        return nodeid, suite if suite in absolute.parents else None
    suite = resources.suite("rcfs")
    name = Path(path).name
    if name and (suite / name).is_file():
        return f"{suite / name}{sep}{rest}", suite
    return nodeid, None


def pytest_argv(targets: Sequence[str], *, config: str, series: str | None = None,
                suite: Path | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``python -m pytest TARGETS`` for one kernel (config, series), in this interpreter."""
    argv = [sys.executable, "-m", "pytest", *targets]
    if suite is not None:
        argv += suite_settings(suite)
    argv += ["-p", "no:cacheprovider", "--kernel-config", config]
    if series:
        argv += ["--kernel-series", series]
    return argv + list(extra)
