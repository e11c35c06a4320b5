"""The guest's Debian sources: version order, ranges, .dsc and index parsing, resolution (no network)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import proc
from harness.errors import InputError, StageError
from harness.image import aptsrc, debsrc, debversion
from harness.image.aptsrc import PrivateApt, SourceRecord
from harness.image.debversion import VersionRange
from harness.image.recipe import Package

# Each expected result was checked with `dpkg --compare-versions`.
DPKG_ORDER = [
    ("1.0", "1.0", 0),
    ("1.0", "1.0-1", -1),
    ("1.0~rc1", "1.0", -1),
    ("1:1.0", "2.0", 1),
    ("1.35.0-4", "1.35.0-4+deb12u1", -1),
    ("1.35.0-4+deb12u1", "1.35.0-4+deb12u2", -1),
    ("2022.83-1+deb12u3", "2025.89-1~deb13u1", -1),
    ("2025.89-1~deb13u1", "2025.89-1", -1),
    ("1.2a", "1.2", 1),
    ("1.2+dfsg", "1.2", 1),
    ("1.02", "1.2", 0),
    ("1.10", "1.9", 1),
    ("1.0-1", "1.0-1.1", -1),
    ("1.0a", "1.0+", -1),
]


@pytest.mark.parametrize(("a", "b", "expected"), DPKG_ORDER)
def test_debian_versions_sort_as_dpkg_sorts_them(a: str, b: str, expected: int) -> None:
    assert debversion.compare(a, b) == expected
    assert debversion.compare(b, a) == -expected


def test_split_and_upstream() -> None:
    assert debversion.split("1:1.35.0-4+deb12u1") == (1, "1.35.0", "4+deb12u1")
    assert debversion.split("2025.89-1~deb13u1") == (0, "2025.89", "1~deb13u1")
    assert debversion.split("1.2.3") == (0, "1.2.3", "")
    assert debversion.upstream("1:2.0-1-2") == "2.0-1"  # the revision follows the last hyphen
    assert debversion.split("1:2:3") == (1, "2:3", "")  # a colon is allowed after an epoch
    for bad in ("", "latest", "a1.0", "1.0 -1", "1.0:2", "1.0-"):
        with pytest.raises(ValueError):
            debversion.split(bad)


def test_version_ranges() -> None:
    busybox = VersionRange.parse(">=1.35, <1.38")
    assert str(busybox) == ">=1.35, <1.38"
    assert [busybox.admits(v) for v in ("1.34.1", "1.35", "1.35.0", "1.36.1", "1.37.0", "1.38.0")] == [
        False, True, True, True, True, False]
    assert busybox.admits_debian("1:1.37.0-6") and not busybox.admits_debian("1:1.30.1-7ubuntu3")
    assert not busybox.admits_debian("not a version")
    exact = VersionRange.parse("2022.83")
    assert exact.admits("2022.83") and not exact.admits("2022.82") and str(exact) == "=2022.83"
    assert not VersionRange.parse(">1.0, !=1.5").admits("1.5")
    assert VersionRange.parse("==1.0").clauses == (("=", "1.0"),)
    for bad in ("", "latest", ">=", "=> 1.0", ">=1.0,", "1.0-1", ">=1.0 <2"):
        with pytest.raises(InputError, match="not an upstream version clause"):
            VersionRange.parse(bad)


# --- .dsc files and the Sources index ------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dsc_text(source: str, version: str, files: dict[str, bytes], signed: bool = False) -> str:
    body = (f"Format: 3.0 (quilt)\nSource: {source}\nBinary: {source}\nVersion: {version}\n"
            "Checksums-Sha256:\n"
            + "".join(f" {sha(data)} {len(data)} {name}\n" for name, data in files.items())
            + "Files:\n" + "".join(f" {'0' * 32} {len(data)} {name}\n" for name, data in files.items()))
    if not signed:
        return body
    return ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + body
            + "\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n-----END PGP SIGNATURE-----\n")


def test_parse_dsc_plain_and_clear_signed() -> None:
    files = {"busybox_1.35.0.orig.tar.bz2": b"orig", "busybox_1.35.0-4.debian.tar.xz": b"deb"}
    for signed in (False, True):
        source, version, listed = debsrc.parse_dsc(dsc_text("busybox", "1:1.35.0-4", files, signed))
        assert (source, version) == ("busybox", "1:1.35.0-4")
        assert [(f.name, f.sha256) for f in listed] == [(n, sha(d)) for n, d in files.items()]
    with pytest.raises(ValueError):
        debsrc.parse_dsc("Format: 3.0\nSource: busybox\n")


SHOWSRC = """\
Package: busybox
Binary: busybox, busybox-static
Version: 1:1.35.0-4+deb12u1
Files:
 970920cff0835a594e89c4a00b56fac4 2321 busybox_1.35.0-4+deb12u1.dsc
Checksums-Sha256:
 9c01fe128b0eeded371c70e37d474fdb5055f71b5d0a778db44c6b0c62d3a7fa 2321 busybox_1.35.0-4+deb12u1.dsc
 faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694 2480624 busybox_1.35.0.orig.tar.bz2
Directory: pool/main/b/busybox

Package: busybox-other
Version: 9.9-1

Package: busybox
Version: 1:1.35.0-4
Checksums-Sha256:
 1111111111111111111111111111111111111111111111111111111111111111 10 busybox_1.35.0-4.dsc
"""


def test_parse_sources_index() -> None:
    records = aptsrc.parse_sources(SHOWSRC, "busybox")
    assert [r.version for r in records] == ["1:1.35.0-4+deb12u1", "1:1.35.0-4"]
    assert records[0].files[1] == (
        "busybox_1.35.0.orig.tar.bz2", "faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694")
    assert aptsrc.parse_sources("E: You must put some 'deb-src' URIs in your sources.list\n",
                                "busybox") == []


# --- resolution ------------------------------------------------------------------------------


@dataclass
class Archive:
    """What the fake apt offers: version -> files (the .dsc made from them)."""

    source: str
    versions: dict[str, dict[str, bytes]]
    reachable: bool = True
    calls: list[str] = field(default_factory=list)

    def dsc(self, version: str) -> tuple[str, bytes]:
        name = debsrc.dsc_name(self.source, version)
        return name, dsc_text(self.source, version, self.versions[version]).encode()

    def record(self, version: str) -> SourceRecord:
        name, text = self.dsc(version)
        files = {name: text, **self.versions[version]}
        return SourceRecord(self.source, version, tuple((n, sha(d)) for n, d in files.items()))


class FakeApt(PrivateApt):
    def __init__(self, root: Path, archive: Archive) -> None:
        super().__init__(root)
        self.archive = archive

    def update(self) -> proc.Completed:
        self.archive.calls.append("update")
        ok = self.archive.reachable
        return proc.Completed(("apt-get",), 0 if ok else 100, "", "" if ok else
                              "W: Failed to fetch\nE: Some index files failed to download.\n", 0.0)

    def showsrc(self, package: str) -> list[SourceRecord]:
        self.archive.calls.append(f"showsrc {package}")
        return [self.archive.record(v) for v in self.archive.versions]

    def download(self, package: str, version: str, dest: Path) -> proc.Completed:
        self.archive.calls.append(f"download {package}={version}")
        if not self.archive.reachable:
            return proc.Completed(("apt-get",), 100, "", "E: Failed to fetch http://x/y  Could not "
                                  "resolve 'deb.debian.org'\n", 0.0)
        name, text = self.archive.dsc(version)
        (dest / name).write_bytes(text)
        for fname, data in self.archive.versions[version].items():
            if (dest / fname).is_file():  # apt keeps a file that matches the index
                self.archive.calls.append(f"kept {fname}")
                if (dest / fname).read_bytes() == data:
                    continue
            (dest / fname).write_bytes(data)
        return proc.Completed(("apt-get",), 0, "", "", 0.0)


BUSYBOX = Package("busybox", "busybox", VersionRange.parse(">=1.35, <1.38"))


def files(upstream: str, revision: str) -> dict[str, bytes]:
    return {f"busybox_{upstream}.orig.tar.bz2": f"upstream {upstream}".encode(),
            f"busybox_{upstream}-{revision}.debian.tar.xz": f"debian {revision}".encode()}


@pytest.fixture
def archive(monkeypatch: pytest.MonkeyPatch) -> Archive:
    monkeypatch.setattr(PrivateApt, "available", staticmethod(lambda: True))
    return Archive("busybox", {
        "1:1.30.1-7": files("1.30.1", "7"),
        "1:1.35.0-4": files("1.35.0", "4"),
        "1:1.35.0-4+deb12u1": files("1.35.0", "4+deb12u1"),
        "1:1.38.0-1": files("1.38.0", "1"),
    })


def resolve(archive: Archive, *, refresh: bool = False) -> debsrc.DebianSource:
    dl = debsrc.debian_downloads()
    return debsrc.resolve(BUSYBOX, dl, FakeApt(dl / ".apt", archive), refresh=refresh)


def test_fresh_machine_takes_the_newest_version_in_range(archive: Archive) -> None:
    src = resolve(archive)
    assert src.version == "1:1.35.0-4+deb12u1" and src.upstream == "1.35.0"
    assert src.orig.name == "busybox_1.35.0.orig.tar.bz2"
    assert src.orig_path.read_bytes() == b"upstream 1.35.0"
    assert archive.calls == ["update", "showsrc busybox", "download busybox=1:1.35.0-4+deb12u1"]
    assert src.meta() == {"package": "busybox", "version": "1:1.35.0-4+deb12u1",
                          "orig": "busybox_1.35.0.orig.tar.bz2", "orig_sha256": sha(b"upstream 1.35.0")}
    assert not list(src.directory.glob(".fetch-*"))


def test_a_downloaded_version_is_used_without_apt(archive: Archive) -> None:
    first = resolve(archive)
    archive.calls.clear()
    archive.versions["1:1.35.0-4+deb12u2"] = files("1.35.0", "4+deb12u2")
    assert resolve(archive) == first
    assert archive.calls == []
    # asked to refresh, it takes the newer revision; the upstream tarball is kept, not fetched again
    newer = resolve(archive, refresh=True)
    assert newer.version == "1:1.35.0-4+deb12u2"
    assert "kept busybox_1.35.0.orig.tar.bz2" in archive.calls


def test_a_revision_that_left_the_archive_is_replaced(archive: Archive) -> None:
    first = resolve(archive)
    del archive.versions["1:1.35.0-4+deb12u1"]
    archive.versions["1:1.35.0-4+deb12u3"] = files("1.35.0", "4+deb12u3")
    (first.directory / first.dsc).unlink()  # a fresh machine: nothing downloaded yet
    assert resolve(archive).version == "1:1.35.0-4+deb12u3"


def test_offline_uses_what_was_downloaded(archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    first = resolve(archive)
    archive.versions["1:1.37.0-1"] = files("1.37.0", "1")
    archive.reachable = False
    again = resolve(archive, refresh=True)
    assert again == first
    assert "using 1:1.35.0-4+deb12u1 from" in capsys.readouterr().err


def test_offline_with_nothing_downloaded_is_one_line_naming_the_package(archive: Archive) -> None:
    archive.reachable = False
    with pytest.raises(StageError) as info:
        resolve(archive)
    message = str(info.value)
    assert "\n" not in message and info.value.stage == "image"
    assert message.startswith("busybox: apt-get source busybox=1:1.35.0-4+deb12u1 failed (exit 100)")
    assert "Could not resolve" in message


def test_nothing_in_range_is_one_line_with_what_apt_offers(archive: Archive) -> None:
    for v in ("1:1.35.0-4", "1:1.35.0-4+deb12u1"):
        del archive.versions[v]
    with pytest.raises(StageError) as info:
        resolve(archive)
    message = str(info.value)
    assert "\n" not in message
    assert message == ("busybox: apt offers no Debian source busybox with upstream version "
                       ">=1.35, <1.38 (offered: 1:1.38.0-1, 1:1.30.1-7)")


def test_damaged_download_is_moved_aside_and_fetched_again(archive: Archive) -> None:
    first = resolve(archive)
    first.orig_path.write_bytes(b"bit rot")
    archive.calls.clear()
    again = resolve(archive)
    assert again.version == first.version and again.orig_path.read_bytes() == b"upstream 1.35.0"
    assert [p.name for p in first.directory.glob("busybox_1.35.0.orig.tar.bz2.bad-*")]
    assert "download busybox=1:1.35.0-4+deb12u1" in archive.calls


def test_without_apt_and_downloads_the_error_says_where_to_put_them(
        archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PrivateApt, "available", staticmethod(lambda: False))
    with pytest.raises(StageError, match=r"^busybox: no Debian source busybox with upstream version "
                       r">=1.35, <1.38 in .*downloads/debian, and apt-get is not installed"):
        resolve(archive)
