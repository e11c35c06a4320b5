"""Image and userland cache entries: a damaged manifest is moved aside and the entry built anew."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import cache
from harness.image import userland
from harness.image.assemble import Image

GOOD: dict[str, Any] = {
    "recipe_name": "default", "recipe_hash": "abc", "initramfs": "initramfs.cpio.gz",
    "client_keys": {"root": "keys/root_ed25519"}, "host_key_fingerprint": "SHA256:x",
    "host_public_key": "ssh-ed25519 AAAA", "users": {"root": 0}, "ssh_port": 22,
    "sources": {"busybox": {"version": "1:1.35.0-4"}},
}


def image_entry(manifest: object, key: str = "k1") -> Path:
    d = cache.subdir("images") / key
    (d / "keys").mkdir(parents=True)
    (d / "initramfs.cpio.gz").write_bytes(b"cpio")
    (d / "keys" / "root_ed25519").write_text("key")
    (d / "image.json").write_text(json.dumps(manifest))
    return d


def test_a_good_image_manifest_loads() -> None:
    d = image_entry({**GOOD, "key": "k1"})
    image = Image.load(d)
    assert image is not None and image.cached
    assert image.initramfs == d / "initramfs.cpio.gz"
    assert image.client_keys == {"root": d / "keys" / "root_ed25519"}
    assert image.sources == {"busybox": "1:1.35.0-4"}


def _outside(d: Path) -> dict[str, Any]:
    os.symlink("/etc/passwd", d / "link")
    return {**GOOD, "key": "k1", "initramfs": "link"}


BAD: list[tuple[str, Callable[[Path], object], str]] = [
    ("list", lambda d: [], "holds a JSON list"),
    ("no-key", lambda d: GOOD, "is for key None"),
    ("other-key", lambda d: {**GOOD, "key": "k2"}, "is for key 'k2'"),
    ("no-initramfs", lambda d: {k: v for k, v in {**GOOD, "key": "k1"}.items() if k != "initramfs"},
     "initramfs. is None"),
    ("dotdot", lambda d: {**GOOD, "key": "k1", "initramfs": "../k0/initramfs.cpio.gz"}, "outside the entry"),
    ("absolute", lambda d: {**GOOD, "key": "k1", "initramfs": str(d / "initramfs.cpio.gz")},
     "expected a path relative"),
    ("symlink-out", _outside, "outside the entry"),
    ("missing-key-file", lambda d: {**GOOD, "key": "k1", "client_keys": {"root": "keys/nope"}}, "is missing"),
    ("users", lambda d: {**GOOD, "key": "k1", "users": []}, "users is []"),
    ("port", lambda d: {**GOOD, "key": "k1", "ssh_port": "22"}, "ssh_port is '22'"),
]


@pytest.mark.parametrize(("name", "make", "reason"), BAD, ids=[b[0] for b in BAD])
def test_a_damaged_image_manifest_is_moved_aside_in_one_line(
        name: str, make: Callable[[Path], object], reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = image_entry({})
    (d / "image.json").write_text(json.dumps(make(d)))
    assert Image.load(d) is None
    err = capsys.readouterr().err
    assert reason in err and "moved aside" in err and err.count("\n") == 1, err
    assert not d.exists()
    assert [p.name.startswith("k1.bad-") for p in d.parent.iterdir()] == [True]


def test_an_image_manifest_that_is_not_json_is_moved_aside(capsys: pytest.CaptureFixture[str]) -> None:
    d = image_entry({})
    (d / "image.json").write_bytes(b"\xff{")
    assert Image.load(d) is None
    assert "image.json cannot be read" in capsys.readouterr().err
    assert not d.exists()


def _build(count: list[int]) -> userland.Builder:
    def build(stage: Path, jobs: int) -> tuple[dict[str, str], list[str]]:
        count.append(1)
        (stage / "tool").write_bytes(b"\x7fELF" + bytes([1, 1, 1]) + bytes(9) + (2).to_bytes(2, "little")
                                     + (3).to_bytes(2, "little") + bytes(40))
        return {"/bin/tool": "tool"}, []
    return build


@pytest.mark.parametrize(("manifest", "reason"), [
    ([], "holds a JSON list"),
    ({"key": "other", "binaries": {"/bin/tool": "tool"}}, "is for key 'other'"),
    ({"key": "k1", "binaries": {"/bin/tool": "../../images/x"}}, "outside the entry"),
    ({"key": "k1", "binaries": "tool"}, "binaries is str"),
    ({"key": "k1", "binaries": {"/bin/tool": "tool"}, "links": [1]}, "links is [1]"),
])
def test_a_damaged_userland_manifest_is_rebuilt(manifest: object, reason: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(userland, "check_static_i386", lambda path: None)
    built: list[int] = []
    first = userland.userland_entry("tool", "k1", _build(built), 1)
    (first.directory / "userland.json").write_text(json.dumps(manifest))
    again = userland.userland_entry("tool", "k1", _build(built), 1)
    assert len(built) == 2 and not again.cached
    assert again.binaries == {"/bin/tool": first.directory / "tool"}
    err = capsys.readouterr().err
    assert reason in err and "moved aside" in err, err
