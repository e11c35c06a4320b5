"""Archive handling that cannot write outside its destination.

:func:`safe_extract_tar` refuses, before writing anything, any member that is
absolute, climbs out with ``..``, is a link pointing outside the destination,
or is a device, FIFO or other special file.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from harness.errors import InputError


def _inside(dest: str, path: str) -> bool:
    return os.path.commonpath([dest, os.path.realpath(path)]) == dest


def check_member(dest: Path, member: tarfile.TarInfo, archive: Path) -> None:
    root = os.path.realpath(dest)
    name = member.name
    target = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or not _inside(root, target):
        raise InputError(f"{archive}: member {name!r} would be written outside {dest}; refused")
    if member.issym() or member.islnk():
        link = member.linkname
        base = os.path.dirname(target) if member.issym() else root
        resolved = os.path.normpath(os.path.join(base, link))
        if os.path.isabs(link) or not _inside(root, resolved):
            raise InputError(
                f"{archive}: member {name!r} links to {link!r} outside {dest}; refused")
    elif not (member.isfile() or member.isdir()):
        raise InputError(f"{archive}: member {name!r} is a device or special file; refused")


def safe_extract_tar(path: Path, dest: Path) -> None:
    """Extract a .tar, .tar.gz, .tar.bz2 or .tar.xz into ``dest`` (which must exist)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(dest, member, path)
            tar.extractall(dest, members=members, filter="tar")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable tar archive ({exc})") from None
