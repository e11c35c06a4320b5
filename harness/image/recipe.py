"""The image recipe model: what a guest image holds, as typed, frozen dataclasses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cache, resources
from harness.errors import InputError
from harness.image.debversion import VersionRange

# Bump when the build or assembly logic changes what an image contains.
IMAGE_FORMAT = "2"


def images_dir() -> Path:
    """The shipped recipes (``harness/data/images``)."""
    return resources.shipped("images")


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up by name: ``$HARNESS_IMAGES`` (yours, first), then the shipped."""
    return resources.search_path("HARNESS_IMAGES", "images")


@dataclass(frozen=True)
class Package:
    """A Debian source package, chosen by its upstream version from what apt offers."""

    name: str  # busybox | dropbear
    source: str  # Debian source package name
    upstream: VersionRange  # upstream versions the recipe accepts
    config: bytes | None = None  # busybox: the applets and features (on top of allnoconfig)
    options: bytes | None = None  # dropbear: localoptions.h


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    authorized_keys: tuple[str, ...] = ()  # extra keys besides the generated one


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExtraFile:
    path: str  # absolute guest path
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Program:
    """A single-file C program compiled statically for the guest."""

    name: str
    source: bytes
    source_path: Path
    install: str
    cflags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Network:
    address: str = "10.0.2.15"
    prefix: int = 24
    gateway: str = "10.0.2.2"
    ssh_port: int = 22

    @property
    def netmask(self) -> str:
        bits = (0xFFFFFFFF << (32 - self.prefix)) & 0xFFFFFFFF
        return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


def _sha(data: bytes | str | None) -> str | None:
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    hostname: str
    init_template: Path
    init_source: str
    network: Network
    packages: Mapping[str, Package]
    users: tuple[User, ...]
    groups: tuple[Group, ...]
    programs: tuple[Program, ...]
    files: tuple[ExtraFile, ...]

    def canonical(self) -> dict[str, Any]:
        """Everything the recipe says about the image, file contents as sha256.

        The Debian versions chosen for the packages are not part of it: they
        depend on the machine's apt sources and go into the image key
        (:func:`harness.image.assemble.image_key`).
        """
        return {
            "format": IMAGE_FORMAT,
            "name": self.name,
            "hostname": self.hostname,
            "init": _sha(self.init_source),
            "network": {
                "address": self.network.address,
                "prefix": self.network.prefix,
                "gateway": self.network.gateway,
                "ssh_port": self.network.ssh_port,
            },
            "packages": {
                name: {
                    "source": p.source,
                    "upstream": str(p.upstream),
                    "config": _sha(p.config),
                    "options": _sha(p.options),
                }
                for name, p in sorted(self.packages.items())
            },
            "users": [
                [u.name, u.uid, u.gid, u.home, u.shell, list(u.authorized_keys)]
                for u in self.users
            ],
            "groups": [[g.name, g.gid, list(g.members)] for g in self.groups],
            "programs": [
                [p.name, _sha(p.source), p.install, list(p.cflags)] for p in self.programs
            ],
            "files": [[f.path, _sha(f.content), f.mode, f.uid, f.gid] for f in self.files],
        }

    @property
    def recipe_hash(self) -> str:
        """Stable across comments, key order and the recipe's location."""
        return cache.digest(json.dumps(self.canonical(), sort_keys=True), length=16)

    def user(self, name: str) -> User:
        for u in self.users:
            if u.name == name:
                return u
        raise InputError(f"recipe {self.name}: no user {name!r}")
