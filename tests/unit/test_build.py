"""The build stage driven against a tiny fake kernel tree whose Makefile mimics kbuild."""

from __future__ import annotations

import difflib
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness import cache, proc
from harness.errors import DiskFull, InputError, StageError
from harness.kernel import build, build_entry
from harness.kernel.config import ConfigRequest
from harness.kernel.patches import load_series
from harness.kernel.source import Source

FAKE_MAKEFILE = """\
allnoconfig:
\t@echo allnoconfig >> $(O)/../make-calls
\t@printf 'CONFIG_A=y\\n# CONFIG_B is not set\\nCONFIG_N=3\\n' > $(O)/.config
oldconfig:
\t@echo oldconfig >> $(O)/../make-calls
\t@sed -i 's/^CONFIG_B=y/# CONFIG_B is not set/' $(O)/.config
bzImage:
\t@echo bzImage >> $(O)/../make-calls
\t@if grep -q BROKEN kernel/rcfs.c; then echo 'kernel/rcfs.c:1: error: broken'; exit 2; fi
\t@if grep -q DISKFULL kernel/rcfs.c; then echo 'ld: final link failed: No space left on device'; \\
\t  echo 'make[1]: *** [Makefile:746: vmlinux] Error 1'; exit 2; fi
\t@echo '$(if $(findstring s,$(firstword x$(MAKEFLAGS))),,  CC      kernel/rcfs.o)'
\t@echo 'kernel/rcfs.c:2: warning: unused'
\t@mkdir -p $(O)/arch/i386/boot
\t@cat kernel/rcfs.c > $(O)/arch/i386/boot/bzImage
\t@touch $(O)/System.map
"""
KCONFIG = "config A\n\tbool\nconfig B\n\tbool\nconfig N\n\tint\n\trange 1 9\n"
RCFS_V1 = "int rcfs;\n"


def make_patch(target: str, old: str, new: str) -> str:
    body = "".join(difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), f"a/{target}", f"b/{target}"))
    return f"Subject: [PATCH] edit {target}\n\n---\n{body}"


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    tree = tmp_path / "pristine"
    (tree / "kernel").mkdir(parents=True)
    (tree / "Makefile").write_text(FAKE_MAKEFILE)
    (tree / "Kconfig").write_text(KCONFIG)
    (tree / "kernel" / "rcfs.c").write_text(RCFS_V1)
    (tree / "kernel" / "other.c").write_text("int other;\n")
    cache.make_read_only(tree)
    return tree


@pytest.fixture
def patch_root(tmp_path: Path) -> Path:
    root = tmp_path / "patches" / "s"
    root.mkdir(parents=True)
    (root / "0001-v2.patch").write_text(make_patch("kernel/rcfs.c", RCFS_V1, "int rcfs_v2;\n"))
    (root / "series").write_text("0001-v2.patch\n")
    return root.parent


def request(pristine: Path, patch_root: Path, symbols: dict[str, str] | None = None
            ) -> build.BuildRequest:
    cfg = ConfigRequest("fake", symbols or {"CONFIG_A": "y", "CONFIG_N": "3"}, {})
    return build.BuildRequest(Source("fake-1", pristine, "test"), load_series("s", patch_root),
                              cfg, jobs=1)


def calls(result: build.BuildResult) -> list[str]:
    path = result.directory / "make-calls"
    return path.read_text().split() if path.exists() else []


def test_build_then_cache_hit(pristine: Path, patch_root: Path) -> None:
    first = build.build(request(pristine, patch_root))
    assert not first.cached
    assert first.bzimage.read_text() == "int rcfs_v2;\n"
    assert calls(first) == ["allnoconfig", "oldconfig", "bzImage"]
    assert first.warnings == 1
    meta = build.load_meta(first.directory)
    assert meta is not None
    assert meta["inputs"]["patches"][0]["name"] == "s/0001-v2.patch"
    assert {"bzImage", "config", "System.map", "log"} <= meta["paths"].keys()
    assert meta["inputs"]["toolchain"]["gcc"]
    second = build.build(request(pristine, patch_root))
    assert second.cached and second.key == first.key
    assert calls(second) == ["allnoconfig", "oldconfig", "bzImage"]  # no make at all


def test_pristine_tree_untouched(pristine: Path, patch_root: Path) -> None:
    result = build.build(request(pristine, patch_root))
    assert (pristine / "kernel" / "rcfs.c").read_text() == RCFS_V1
    src = result.directory / "src"
    assert os.stat(src / "kernel" / "other.c").st_ino == os.stat(pristine / "kernel" / "other.c").st_ino
    assert os.stat(src / "kernel" / "rcfs.c").st_ino != os.stat(pristine / "kernel" / "rcfs.c").st_ino


def test_changed_patch_rebuilds_only_changed_files(pristine: Path, patch_root: Path) -> None:
    first = build.build(request(pristine, patch_root))
    src = first.directory / "src"
    other_mtime = os.stat(src / "kernel" / "other.c").st_mtime_ns
    config_mtime = os.stat(first.dotconfig).st_mtime_ns
    (patch_root / "s" / "0001-v2.patch").write_text(
        make_patch("kernel/rcfs.c", RCFS_V1, "int rcfs_v3;\n"))
    second = build.build(request(pristine, patch_root))
    assert not second.cached and second.directory == first.directory
    assert second.bzimage.read_text() == "int rcfs_v3;\n"
    assert os.stat(src / "kernel" / "other.c").st_mtime_ns == other_mtime
    assert os.stat(second.dotconfig).st_mtime_ns == config_mtime  # unchanged config keeps its time


def test_compile_error_reports_first_errors_and_log(pristine: Path, patch_root: Path) -> None:
    (patch_root / "s" / "0001-v2.patch").write_text(
        make_patch("kernel/rcfs.c", RCFS_V1, "BROKEN\n"))
    with pytest.raises(StageError) as err:
        build.build(request(pristine, patch_root))
    text = str(err.value)
    assert "kernel/rcfs.c:1: error: broken" in text and "build.log" in text
    entry = next((cache.root() / "builds").iterdir())
    assert not (entry / "meta.json").exists()


def test_out_of_range_fails_before_make_and_writes_nothing(pristine: Path, patch_root: Path) -> None:
    with pytest.raises(InputError, match=r"CONFIG_N=0: out of range, allowed 1\.\.9"):
        build.build(request(pristine, patch_root, {"CONFIG_N": "0"}))
    assert not any((cache.root() / "builds").iterdir())


def test_lost_symbol_is_reported(pristine: Path, patch_root: Path) -> None:
    with pytest.raises(InputError, match="CONFIG_B wanted y, got not set"):
        build.build(request(pristine, patch_root, {"CONFIG_B": "y", "CONFIG_A": "n"}))
    assert not any((cache.root() / "builds").iterdir())


def test_patch_that_does_not_apply_leaves_nothing(pristine: Path, patch_root: Path) -> None:
    (patch_root / "s" / "0001-v2.patch").write_text(
        make_patch("kernel/rcfs.c", "int something_else;\n", "x\n"))
    with pytest.raises(StageError, match=r"patch s/0001-v2.patch: hunk #1 of kernel/rcfs.c"):
        build.build(request(pristine, patch_root))
    assert not any((cache.root() / "builds").iterdir())


def test_key_depends_on_inputs(pristine: Path, patch_root: Path) -> None:
    toolchain = build.Toolchain("gcc -m32", "gcc 12", "ld 2.40", "make 4.3")
    base = request(pristine, patch_root)
    other = request(pristine, patch_root, {"CONFIG_A": "y", "CONFIG_N": "4"})
    assert build.entry_dir(base, toolchain) == build.entry_dir(base, toolchain)
    assert build.entry_dir(base, toolchain)[0] != build.entry_dir(other, toolchain)[0]
    newer = build.Toolchain("gcc -m32", "gcc 13", "ld 2.40", "make 4.3")
    assert build.entry_dir(base, toolchain)[0] != build.entry_dir(base, newer)[0]


def test_sync_tree(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for t in (old, new):
        (t / "d").mkdir(parents=True)
        (t / "same.c").write_text("same\n")
    (old / "changed.c").write_text("v1\n")
    (new / "changed.c").write_text("v2\n")
    (old / "d" / "gone.c").write_text("x\n")
    (new / "d" / "added.c").write_text("y\n")
    os.utime(old / "same.c", (1, 1))
    assert build.sync_tree(new, old) == 3
    assert (old / "changed.c").read_text() == "v2\n"
    assert (old / "d" / "added.c").exists() and not (old / "d" / "gone.c").exists()
    assert os.stat(old / "same.c").st_mtime == 1


def test_make_flags_of_a_parent_make_do_not_reach_kbuild(
    pristine: Path, patch_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `make -s test` MAKEFLAGS=s is exported; kbuild must still say what it compiles."""
    monkeypatch.setenv("MAKEFLAGS", "s")
    monkeypatch.setenv("MAKELEVEL", "1")
    result = build.build(request(pristine, patch_root))
    assert "  CC      kernel/rcfs.o" in result.log.read_text()


# --- damaged entries (issue 12): checked when read, moved aside, built anew --------------


def _damage(result: build.BuildResult, change: Any) -> None:
    meta = json.loads(result.meta_path.read_text())
    result.meta_path.write_text(json.dumps(change(meta)))


def _moved_aside(result: build.BuildResult) -> list[Path]:
    return list(result.directory.parent.glob(result.directory.name + ".bad-*"))


def _without(meta: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != name}


@pytest.mark.parametrize(("change", "reason"), [
    (lambda meta: [], "meta.json holds a JSON list, expected an object"),
    (lambda meta: "text", "meta.json holds a JSON str, expected an object"),
    (lambda meta: _without(meta, "paths"), "paths is missing, expected an object"),
    (lambda meta: {**meta, "paths": {**meta["paths"], "bzImage": "/boot/vmlinuz"}},
     "paths.bzImage /boot/vmlinuz is not this entry's"),
    (lambda meta: {**meta, "key": "0" * 16}, "meta.json is for key '0000000000000000'"),
    (lambda meta: {**meta, "warnings": "many"}, "warnings is 'many'"),
    (lambda meta: _without(meta, "inputs"), "inputs is missing"),
], ids=["list", "string", "no-paths", "path-outside", "key-mismatch", "warnings", "no-inputs"])
def test_a_damaged_meta_is_moved_aside_and_rebuilt(
        pristine: Path, patch_root: Path, capsys: pytest.CaptureFixture[str], change: Any,
        reason: str) -> None:
    first = build.build(request(pristine, patch_root))
    _damage(first, change)
    capsys.readouterr()
    again = build.build(request(pristine, patch_root))
    assert not again.cached and again.directory == first.directory
    assert again.bzimage == first.directory / "out/arch/i386/boot/bzImage"
    assert again.bzimage.read_text() == "int rcfs_v2;\n"
    err = capsys.readouterr().err
    assert f"{first.directory}: damaged build entry: {reason}" in err, err
    assert len(_moved_aside(first)) == 1
    assert build.build(request(pristine, patch_root)).cached  # the new entry is sound


def test_a_meta_pointing_at_another_builds_kernel_is_never_used(
        pristine: Path, patch_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The worst case seen: paths.bzImage of one entry naming another entry's kernel."""
    mine = build.build(request(pristine, patch_root))
    other = build.build(request(pristine, patch_root, {"CONFIG_A": "y", "CONFIG_N": "4"}))
    assert other.directory != mine.directory
    other.bzimage.write_text("the other kernel\n")
    _damage(mine, lambda meta: {**meta, "paths": {**meta["paths"], "bzImage": str(other.bzimage)}})
    again = build.build(request(pristine, patch_root))
    assert again.bzimage.read_text() == "int rcfs_v2;\n"
    assert other.directory not in again.bzimage.parents
    assert "is not this entry's" in capsys.readouterr().err


def test_an_artefact_symlinked_out_of_the_entry_is_refused(
        pristine: Path, patch_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = build.build(request(pristine, patch_root))
    elsewhere = tmp_path / "elsewhere-bzImage"
    elsewhere.write_text("not this build\n")
    mine.bzimage.unlink()
    mine.bzimage.symlink_to(elsewhere)
    capsys.readouterr()
    again = build.build(request(pristine, patch_root))
    assert not again.bzimage.is_symlink() and again.bzimage.read_text() == "int rcfs_v2;\n"
    assert "paths.bzImage" in (err := capsys.readouterr().err) and "lies outside the entry" in err
    assert len(_moved_aside(mine)) == 1


def test_meta_round_trip(tmp_path: Path) -> None:
    directory = tmp_path / "rcfs-default-0123456789abcdef"
    meta = build_entry.new_meta(directory, "0123456789abcdef", {"a": 1}, 1.5, 3, 2)
    build_entry.write_meta(directory, meta)
    assert build_entry.read_meta(directory, build_entry.entry_key(directory)) == meta
    assert build_entry.read_meta(tmp_path / "none", "x") is None
    with pytest.raises(build_entry.BadEntry, match="is for key"):
        build_entry.read_meta(directory, "fedcba9876543210")


# --- -j and full disks (issue 12) --------------------------------------------------------


@pytest.mark.parametrize("jobs", [0, -3])
def test_bad_job_count_is_refused_before_anything_and_keeps_the_meta(
        pristine: Path, patch_root: Path, jobs: int) -> None:
    first = build.build(request(pristine, patch_root))
    meta = first.meta_path.read_text()
    good = request(pristine, patch_root)
    with pytest.raises(InputError, match=rf"-j {jobs}: expected .* 1 or more"):
        build.build(build.BuildRequest(good.source, good.series, good.config, jobs=jobs), force=True)
    assert first.meta_path.read_text() == meta


def test_a_full_disk_at_link_time_names_the_entry_and_the_cause(
        pristine: Path, patch_root: Path) -> None:
    (patch_root / "s" / "0001-v2.patch").write_text(make_patch("kernel/rcfs.c", RCFS_V1, "DISKFULL\n"))
    with pytest.raises(DiskFull) as err:
        build.build(request(pristine, patch_root))
    message = str(err.value)
    entry = next((cache.root() / "builds").iterdir())
    assert "\n" not in message and message.startswith(f"{entry}: no space left on device")
    assert "ld: final link failed: No space left on device" in message
    assert str(entry / "build.log") in message
    assert not (entry / "meta.json").exists()


def test_a_full_disk_while_hard_linking_leaves_nothing(
        pristine: Path, patch_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = proc.run

    def run(argv: Any, **kwargs: Any) -> proc.Completed:
        if list(argv[:2]) == ["cp", "-al"]:
            return proc.Completed(tuple(argv), 1, "", "cp: cannot create hard link 'b' to 'a': "
                                  "No space left on device\n", 0.1)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(proc, "run", run)
    with pytest.raises(DiskFull, match="no space left on device while hard-linking the source"):
        build.build(request(pristine, patch_root))
    assert not any((cache.root() / "builds").iterdir())


def test_a_full_disk_while_writing_the_log_is_one_error(
        pristine: Path, patch_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stream(*args: Any, **kwargs: Any) -> proc.Completed:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(proc, "stream", stream)
    with pytest.raises(DiskFull, match="no space left on device while building s/fake"):
        build.build(request(pristine, patch_root))


def test_a_prebuilt_kernel_uses_its_entry_meta_only_when_sound(
        pristine: Path, patch_root: Path, tmp_path: Path) -> None:
    """prepare_prebuilt (harness bisect's pytest child) reads the meta of the kernel it is given."""
    from harness.run import target

    result = build.build(request(pristine, patch_root))
    meta = target._prebuilt_meta(result.bzimage)
    assert meta is not None and meta.paths["log"] == result.log and meta.warnings == result.warnings
    _damage(result, lambda meta: {**meta, "paths": {**meta["paths"], "log": "/etc/shadow"}})
    assert target._prebuilt_meta(result.bzimage) is None
    result.meta_path.write_text("[]")
    assert target._prebuilt_meta(result.bzimage) is None
    result.meta_path.write_text(json.dumps({"key": result.key}))
    assert target._prebuilt_meta(result.bzimage) is None
    assert result.bzimage.is_file() and not _moved_aside(result), "the caller's kernel stays"
    loose = tmp_path / "a" / "b" / "c" / "d" / "e" / "bzImage"
    loose.parent.mkdir(parents=True)
    loose.write_text("x")
    assert target._prebuilt_meta(loose) is None
