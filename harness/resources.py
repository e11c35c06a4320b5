"""Where the shipped data is (series, configs, image recipes, the rcfs suite) and the user's overrides.

The data ships inside the package (``harness/data``, ``harness/suites``) and
is found with :mod:`importlib.resources`, so a plain ``pip install .`` works
from any folder.  A user's own directories come first on each search path:

* ``$HARNESS_PATCHES``: patch series (``NAME/series``), by name before the shipped ones;
* ``$HARNESS_CONFIGS``: a ``configs.toml`` whose configs add to (or replace, by name)
  the shipped ones, and templates that may ``{% include %}`` the shipped templates;
* ``$HARNESS_IMAGES``: image recipes (``NAME/recipe.toml``).

Each variable may list several directories separated by ``:``.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from harness.errors import InputError


def _package_dir(*parts: str) -> Path:
    resource = files("harness").joinpath(*parts)
    path = Path(str(resource))
    if not path.is_dir():
        raise InputError(f"harness package data {'/'.join(parts)} is missing from {path.parent} "
                         "(the harness must be installed from a directory, not a zip)")
    return path


def shipped(name: str) -> Path:
    """A shipped data directory: ``patches``, ``kernel-configs`` or ``images``."""
    return _package_dir("data", name)


def suite(name: str = "rcfs") -> Path:
    """The directory of a shipped pytest suite."""
    return _package_dir("suites", name)


def user_dirs(variable: str) -> list[Path]:
    """The directories a ``HARNESS_*`` variable names (``:``-separated), in order."""
    value = os.environ.get(variable, "")
    return [Path(part).expanduser().absolute() for part in value.split(":") if part.strip()]


def search_path(variable: str, name: str) -> list[Path]:
    """The user's directories for ``variable``, then the shipped ``name`` directory."""
    return [*user_dirs(variable), shipped(name)]
