from __future__ import annotations

from pathlib import Path

import pytest

from harness import proc
from harness.errors import DiskFull, InputError, StageError
from harness.kernel import patches

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 21))


def make_patch(old: str, new: str, target: str = "f.txt") -> str:
    import difflib

    body = "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{target}", f"b/{target}")
    )
    return f"From: Test <t@example>\nSubject: [PATCH] change {target}\n\nmsg\n---\n{body}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "patches"
    (r / "base").mkdir(parents=True)
    step1 = ORIGINAL.replace("line 3\n", "line three\n")
    (r / "base" / "0001-three.patch").write_text(make_patch(ORIGINAL, step1))
    (r / "base" / "series").write_text("# the base\n0001-three.patch\n")
    (r / "top").mkdir()
    step2 = step1.replace("line 15\n", "line fifteen\n")
    (r / "top" / "0001-fifteen.patch").write_text(make_patch(step1, step2))
    (r / "top" / "series").write_text("0001-fifteen.patch -p1\n\n")
    (r / "top" / "base").write_text("base\n")
    return r


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    t.mkdir()
    (t / "f.txt").write_text(ORIGINAL)
    return t


def test_chain_resolves_base_first(root: Path) -> None:
    series = patches.load_series("top", root)
    assert series.chain == ("base", "top")
    assert [f"{p.series}/{p.name}" for p in series.patches] == [
        "base/0001-three.patch", "top/0001-fifteen.patch"]
    assert [p.name for p in series.own_patches()] == ["0001-fifteen.patch"]
    assert series.patches[0].subject == "[PATCH] change f.txt"


def test_digest_follows_patch_contents(root: Path) -> None:
    before = patches.load_series("top", root).digest()
    (root / "top" / "0001-fifteen.patch").write_text(
        (root / "top" / "0001-fifteen.patch").read_text() + "\n")
    assert patches.load_series("top", root).digest() != before


def test_apply_series(root: Path, tree: Path) -> None:
    patches.apply_series(patches.load_series("top", root), tree)
    text = (tree / "f.txt").read_text()
    assert "line three\n" in text and "line fifteen\n" in text


def test_prefix(root: Path, tree: Path) -> None:
    patches.apply_series(patches.load_series("top", root).prefix(1), tree)
    assert "line fifteen" not in (tree / "f.txt").read_text()


def test_unknown_series(root: Path) -> None:
    with pytest.raises(InputError, match=r"unknown series 'nope'; expected one of: base, top"):
        patches.load_series("nope", root)


def test_unknown_base(root: Path) -> None:
    (root / "top" / "base").write_text("ghost\n")
    with pytest.raises(InputError, match="unknown base series of 'top' 'ghost'"):
        patches.load_series("top", root)


def test_base_loop(root: Path) -> None:
    (root / "base" / "base").write_text("top\n")
    with pytest.raises(InputError, match="loops"):
        patches.load_series("top", root)


def test_empty_series(root: Path) -> None:
    (root / "top" / "series").write_text("# nothing\n\n")
    with pytest.raises(InputError, match=r"top/series: lists no patches"):
        patches.load_series("top", root)


def test_missing_patch_file(root: Path) -> None:
    (root / "top" / "series").write_text("0001-fifteen.patch\n0002-gone.patch\n")
    with pytest.raises(InputError, match=r"top/series:2: patch '0002-gone.patch' does not exist"):
        patches.load_series("top", root)


def test_damaged_series_line(root: Path) -> None:
    (root / "top" / "series").write_text("0001-fifteen.patch -p0 extra\n")
    with pytest.raises(InputError, match=r"top/series:1: .*expected a patch file name"):
        patches.load_series("top", root)


def test_failed_hunk_names_patch_hunk_file_and_line(root: Path, tree: Path) -> None:
    (tree / "f.txt").write_text(ORIGINAL.replace("line 15\n", "changed\n"))
    patches.apply_patch(patches.load_series("base", root).patches[0], tree)
    before = (tree / "f.txt").read_text()
    with pytest.raises(StageError) as err:
        patches.apply_series(patches.load_series("top", root).prefix(2).prefix(2), tree)
    # base/0001 is already applied there: reported as such, nothing changed
    assert "base/0001-three.patch" in str(err.value)
    assert (tree / "f.txt").read_text() == before
    with pytest.raises(StageError) as err:
        patches.apply_patch(patches.load_series("top", root).patches[1], tree)
    assert str(err.value) == (
        "patch top/0001-fifteen.patch: hunk #1 of f.txt does not apply at line 12")
    assert (tree / "f.txt").read_text() == before
    assert not list(tree.glob("*.rej")) and not list(tree.glob("*.orig"))


def test_missing_target(root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StageError, match="base/0001-three.patch"):
        patches.apply_series(patches.load_series("base", root), empty)


def test_project_series_are_well_formed() -> None:
    for name in patches.available():
        series = patches.load_series(name)
        assert series.chain[-1] == name
        assert series.patches, name


def test_a_dangerous_file_name_is_named_in_the_message(root: Path, tree: Path) -> None:
    (root / "evil").mkdir()
    (root / "evil" / "0001-evil.patch").write_text(
        "Subject: [PATCH] evil\n\n---\n--- a/../evil.c\n+++ b/../evil.c\n@@ -0,0 +1 @@\n+x\n")
    (root / "evil" / "series").write_text("0001-evil.patch\n")
    with pytest.raises(StageError) as err:
        patches.apply_series(patches.load_series("evil", root), tree)
    message = str(err.value)
    assert message.startswith("patch evil/0001-evil.patch: Ignoring potentially dangerous file "
                              "name ../evil.c; target file not found")
    assert "\n" not in message
    assert not (tree.parent / "evil.c").exists()


def test_a_full_disk_while_patching_is_disk_full(root: Path, tree: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: list[str], **kwargs: object) -> proc.Completed:
        return proc.Completed(tuple(argv), 2, "patching file f.txt\n",
                              "patch: **** write error : No space left on device\n", 0.1)

    monkeypatch.setattr(proc, "run", run)
    with pytest.raises(DiskFull) as err:
        patches.apply_patch(patches.load_series("base", root).patches[0], tree)
    assert str(err.value).startswith(f"{tree}: no space left on device while applying "
                                     "base/0001-three.patch (patch: **** write error")
