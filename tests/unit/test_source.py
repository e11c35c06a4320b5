from __future__ import annotations

import errno
import http.server
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cache
from harness.errors import DiskFull, InputError, StageError
from harness.kernel import source

MAKEFILE = "VERSION = 2\nPATCHLEVEL = 6\nSUBLEVEL = 20\nEXTRAVERSION =\nNAME = Homicidal Dwarf Hamster\n"


def fake_tree(path: Path, makefile: str = MAKEFILE) -> Path:
    (path / "kernel").mkdir(parents=True)
    (path / "Makefile").write_text(makefile)
    (path / "kernel" / "fork.c").write_text("int fork;\n")
    return path


def fake_tarball(tmp_path: Path, name: str = "linux-2.6.20.tar.gz") -> Path:
    tree = fake_tree(tmp_path / "linux-2.6.20")
    out = tmp_path / name
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tree, arcname="linux-2.6.20")
    return out


def test_tree_version(tmp_path: Path) -> None:
    assert source.tree_version(fake_tree(tmp_path / "a")) == "2.6.20"
    other = fake_tree(tmp_path / "b", MAKEFILE.replace("EXTRAVERSION =", "EXTRAVERSION = -rc1"))
    assert source.tree_version(other) == "2.6.20-rc1"
    assert source.tree_version(tmp_path) is None


def test_parse_spec_kinds(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "t")
    assert source.parse_spec(str(tree)).kind == "dir"
    assert source.parse_spec(str(fake_tarball(tmp_path))).kind == "tarball"
    spec = source.parse_spec(f"{tree}@v2.6.20")
    assert (spec.kind, spec.ref) == ("git", "v2.6.20")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/no/such/dir", "no such file or directory"),
        ("/no/such/repo@main", "git repository /no/such/repo does not exist"),
        ("", "empty value"),
    ],
)
def test_parse_spec_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        source.parse_spec(text)


def test_parse_spec_not_a_tarball(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a directory and not a .tar"):
        source.parse_spec(str(tmp_path / "notes.txt"))


def test_tarball_is_cached_read_only_and_reused(tmp_path: Path) -> None:
    tarball = fake_tarball(tmp_path)
    src = source.resolve(str(tarball))
    assert src.id.startswith("tar-")
    assert (src.tree / "kernel" / "fork.c").read_text() == "int fork;\n"
    assert not os.stat(src.tree / "Makefile").st_mode & 0o222
    marker = src.tree.parent / "source.json"
    before = marker.read_text()
    assert source.resolve(str(tarball)) == src
    assert marker.read_text() == before


def test_directory_source(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux")
    src = source.resolve(str(tree))
    assert src.id.startswith("dir-")
    assert (src.tree / "Makefile").read_text() == MAKEFILE
    (tree / "kernel" / "fork.c").write_text("int fork2;\n")
    os.utime(tree / "kernel" / "fork.c", (1, 1))
    assert source.resolve(str(tree)).id != src.id


def test_wrong_version_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux", MAKEFILE.replace("SUBLEVEL = 20", "SUBLEVEL = 21"))
    with pytest.raises(InputError, match="not a Linux 2.6.20 tree"):
        source.resolve(str(tree))
    assert not any((cache.root() / "sources").glob("*"))


def test_git_source(tmp_path: Path) -> None:
    from harness import proc

    repo = fake_tree(tmp_path / "repo")
    for argv in (["git", "init", "-q"], ["git", "add", "."],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        proc.run(["git", "-C", str(repo), *argv[1:]] if argv[0] == "git" else argv)
    src = source.resolve(f"{repo}@HEAD")
    assert src.id.startswith("git-") and (src.tree / "kernel" / "fork.c").exists()
    with pytest.raises(InputError, match="REF 'nope' is not a commit"):
        source.resolve(f"{repo}@nope")


def test_no_source_names_the_three_ways() -> None:
    with pytest.raises(StageError) as err:
        source.resolve(None, allow_download=False)
    text = str(err.value)
    assert "--kernel-src" in text and "HARNESS_KERNEL_SRC" in text
    assert source.TARBALL in text and "kernel.org" in text


def test_corrupted_cached_tarball_is_moved_aside(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    downloads = cache.subdir("downloads")
    (downloads / source.TARBALL).write_bytes(b"truncated")
    with pytest.raises(StageError, match="no Linux 2.6.20 source available"):
        source.resolve(None, allow_download=False)  # nothing else to fall back on
    assert not (downloads / source.TARBALL).exists()
    assert len(list(downloads.glob(source.TARBALL + ".bad-*"))) == 1
    assert "does not match the pinned" in capsys.readouterr().err
    # with a cached tree to fall back on, the next way is taken
    src = source.resolve(str(fake_tarball(tmp_path)))
    (downloads / source.TARBALL).write_bytes(b"truncated again")
    assert source.resolve(None, allow_download=False) == src


def test_cached_tree_is_found_without_explicit_source(tmp_path: Path) -> None:
    src = source.resolve(str(fake_tarball(tmp_path)))
    assert source.resolve(None, allow_download=False) == src


def test_escaping_tarball_member_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InputError, match="escapes"):
        source.resolve(str(evil))
    assert not (cache.root() / "sources" / "escape.txt").exists()
    assert not any((cache.root() / "sources").glob("*"))


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut_after: int | None = None

    def do_GET(self) -> None:  # noqa: N802
        data = self.payload
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None and start == 0:
            self.wfile.write(body[: self.cut_after])
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_RangeHandler]]]:
    handler = type("H", (_RangeHandler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/linux.tar.bz2", handler
    httpd.shutdown()


def test_download_verifies_and_resumes(tmp_path: Path, server: tuple[str, type[_RangeHandler]]) -> None:
    import hashlib

    url, handler = server
    payload = os.urandom(300_000)
    handler.payload = payload
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "linux.tar.bz2"
    part = dest.with_name(dest.name + ".part")
    part.write_bytes(payload[:100_000])  # an interrupted earlier download
    assert source.download(url, dest, sha256=sha) == dest
    assert dest.read_bytes() == payload and not part.exists()


def test_download_with_wrong_checksum_keeps_nothing_usable(
    tmp_path: Path, server: tuple[str, type[_RangeHandler]]
) -> None:
    url, handler = server
    handler.payload = b"not the kernel"
    dest = tmp_path / "linux.tar.bz2"
    with pytest.raises(StageError, match="expected"):
        source.download(url, dest, sha256="0" * 64)
    assert not dest.exists()
    assert len(list(tmp_path.glob("linux.tar.bz2.part.bad-*"))) == 1


def test_download_unreachable_says_how_to_provide() -> None:
    with pytest.raises(StageError, match="download failed"):
        source.download("http://127.0.0.1:9/none.tar.bz2", timeout=2)


# --- damaged entries (issue 12: a cache entry is checked when it is read) ----------------


@pytest.mark.parametrize(("content", "reason"), [
    ("[]", "holds a JSON list"),
    ("{not json", "not JSON"),
    ('{"origin": "x", "version": "2.6.20"}', "is for None, not for this entry"),
    ('{"id": "tar-0000000000000000", "origin": "x", "version": "2.6.20"}', "not for this entry"),
    ('{"id": "@ID@", "version": "2.6.20"}', "lacks its origin or version"),
])
def test_a_damaged_source_entry_is_moved_aside_and_made_anew(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, reason: str) -> None:
    tarball = fake_tarball(tmp_path)
    src = source.resolve(str(tarball))
    meta = src.tree.parent / "source.json"
    meta.write_text(content.replace("@ID@", src.id))
    again = source.resolve(str(tarball))  # explicit: made anew
    assert again == src and json.loads(meta.read_text())["id"] == src.id
    err = capsys.readouterr().err
    assert "damaged kernel source entry: " in err and reason in err, err
    assert len(list(src.tree.parent.parent.glob(f"{src.id}.bad-*"))) == 1


def test_a_damaged_entry_found_as_the_most_recent_is_not_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = source.resolve(str(fake_tarball(tmp_path)))
    (src.tree.parent / "source.json").write_text("[]")
    with pytest.raises(StageError, match="no Linux 2.6.20 source available"):
        source.resolve(None, allow_download=False)
    assert "damaged kernel source entry" in capsys.readouterr().err
    assert not src.tree.parent.exists()


def test_staging_and_moved_aside_directories_are_not_sources(tmp_path: Path) -> None:
    sources = cache.subdir("sources")
    for name in (".tar-0123456789abcdef.x.tmp", "tar-0123456789abcdef.bad-1-2"):
        fake_tree(sources / name / "tree")
        (sources / name / "source.json").write_text("[]")
    with pytest.raises(StageError, match="no Linux 2.6.20 source available"):
        source.resolve(None, allow_download=False)
    assert all((sources / name).is_dir() for name in (".tar-0123456789abcdef.x.tmp",
                                                       "tar-0123456789abcdef.bad-1-2"))


def test_junk_tarball_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError) as err:
        source.resolve(str(junk))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{junk}: not a tar archive")
    assert not any((cache.root() / "sources").iterdir())


def _full_disk(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("python", ["3.11.4+", "3.11.2"])
def test_a_full_disk_while_unpacking_is_one_line_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str) -> None:
    if python == "3.11.2":  # Debian 12's Python: tarfile has no data_filter and no FilterError
        for name in ("data_filter", "FilterError"):
            monkeypatch.delattr(tarfile, name, raising=False)
    tarball = fake_tarball(tmp_path)
    monkeypatch.setattr(tarfile.TarFile, "extractall", _full_disk)
    with pytest.raises(DiskFull) as err:
        source.resolve(str(tarball))
    message = str(err.value)
    assert "\n" not in message and "no space left on device" in message
    assert message.startswith(str(cache.root() / "sources")) and str(tarball) in message
    assert not any((cache.root() / "sources").iterdir()), "a half-unpacked source was kept"


def test_a_full_disk_while_copying_a_directory_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = fake_tree(tmp_path / "linux")

    def copy_fails(src: str, dst: str, **kwargs: object) -> None:
        raise shutil.Error([(f"{src}/Makefile", f"{dst}/Makefile",
                             "[Errno 28] No space left on device")] * 500)

    monkeypatch.setattr(shutil, "copytree", copy_fails)
    with pytest.raises(DiskFull) as err:
        source.resolve(str(tree))
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert not any((cache.root() / "sources").iterdir())
