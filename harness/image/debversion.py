"""Debian version strings: ordering as dpkg orders them, and the upstream-version ranges recipes name."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import InputError

_DEBIAN_VERSION = re.compile(r"^(?:(\d+):)?([0-9][A-Za-z0-9.+~:-]*?)(?:-([A-Za-z0-9.+~]+))?$")
_UPSTREAM = re.compile(r"^[0-9][A-Za-z0-9.+~]*$")
_CLAUSE = re.compile(r"^(>=|<=|==|!=|=|>|<)?\s*(\S+)$")


def split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of a Debian version; ValueError if it is not one."""
    m = _DEBIAN_VERSION.match(version)
    if not m or (m.group(1) is None and ":" in m.group(2)) or version.endswith("-"):
        raise ValueError(f"{version!r} is not a Debian version")
    return int(m.group(1) or 0), m.group(2), m.group(3) or ""


def upstream(version: str) -> str:
    """The upstream part: ``1:1.35.0-4+deb12u1`` -> ``1.35.0``."""
    return split(version)[1]


def _order(c: str) -> int:
    """dpkg's weight of one non-digit character: ``~`` first, then the end, letters, the rest."""
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of two upstream (or revision) strings."""
    i = j = 0
    while i < len(a) or j < len(b):
        diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not diff:
                diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if diff:
            return -1 if diff < 0 else 1
    return 0


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version ``a`` sorts before, with or after ``b`` (``dpkg --compare-versions``)."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def compare_upstream(a: str, b: str) -> int:
    """Like :func:`compare` for two upstream versions (no epoch, no revision)."""
    return _compare_part(a, b)


@dataclass(frozen=True)
class VersionRange:
    """Upstream versions a recipe accepts: comma-separated clauses such as ``>=1.35, <1.38``.

    A clause is an operator (``>=``, ``>``, ``<=``, ``<``, ``=``, ``!=``) and an
    upstream version; a bare version means ``=``.  A version is accepted when
    every clause holds, compared as dpkg compares upstream versions.
    """

    clauses: tuple[tuple[str, str], ...]

    @staticmethod
    def parse(text: str) -> VersionRange:
        clauses: list[tuple[str, str]] = []
        for part in text.split(","):
            m = _CLAUSE.match(part.strip())
            if not m or not _UPSTREAM.match(m.group(2)):
                raise InputError(
                    f"{part.strip()!r} is not an upstream version clause "
                    "(expected e.g. '1.35.0', '>=1.35' or '<1.38', comma-separated)")
            op = m.group(1) or "="
            clauses.append(("=" if op == "==" else op, m.group(2)))
        return VersionRange(tuple(clauses))

    def __str__(self) -> str:
        return ", ".join(f"{op}{version}" for op, version in self.clauses)

    def admits(self, upstream_version: str) -> bool:
        for op, bound in self.clauses:
            c = compare_upstream(upstream_version, bound)
            ok = {"=": c == 0, "!=": c != 0, ">=": c >= 0, ">": c > 0, "<=": c <= 0, "<": c < 0}[op]
            if not ok:
                return False
        return True

    def admits_debian(self, version: str) -> bool:
        """Does the upstream part of Debian ``version`` satisfy the range?"""
        try:
            return self.admits(upstream(version))
        except ValueError:
            return False
