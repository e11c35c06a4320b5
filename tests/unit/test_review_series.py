"""The patch under review: found in mails, mboxes and pages; made the top of a temporary series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import resources
from harness.errors import InputError
from harness.kernel import config, patches
from harness.review import run, series

PATCHES = resources.shipped("patches")
POSTED = (PATCHES / "rcfs" / "0001-rcfs-core-patch.patch").read_text()
SMALL = """\
--- a/kernel/x.c
+++ b/kernel/x.c
@@ -1,3 +1,3 @@
 a
-b
+c
 d
"""


def _mail(subject: str, body: str, encoding: str = "7bit") -> str:
    return (f"From: A <a@example.org>\nSubject: {subject}\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {encoding}\n\n{body}")


def test_a_plain_patch(tmp_path: Path) -> None:
    (tmp_path / "p.patch").write_text("Subject: [PATCH] x: change b\n\nWhy.\n---\n" + SMALL)
    sub = series.read_submission(tmp_path / "p.patch", None)
    assert len(sub.patches) == 1 and sub.subject == "[PATCH] x: change b"
    assert sub.patches[0].files == ("kernel/x.c",)


def test_a_quoted_printable_mail(tmp_path: Path) -> None:
    body = "Why=3D because.\n---\n" + SMALL.replace("+c", "+c =3D 1;")
    (tmp_path / "m.eml").write_text(_mail("[PATCH] x: qp", body, "quoted-printable"))
    (patch,) = series.read_submission(tmp_path / "m.eml", None).patches
    assert "+c = 1;" in patch.diff  # decoded, not "=3D"


def test_an_mbox_series_in_patch_order_without_its_cover_letter(tmp_path: Path) -> None:
    second = SMALL.replace("kernel/x.c", "kernel/y.c")
    text = "".join(f"From nobody Mon Jan  1 00:00:00 2007\n{m}\n" for m in [
        _mail("[PATCH 2/2] y", "Second.\n---\n" + second),
        _mail("[PATCH 0/2] cover", "Two patches, no diff here.\n"),
        _mail("[PATCH 1/2] x", "First.\n---\n" + SMALL)])
    (tmp_path / "s.mbox").write_text(text)
    sub = series.read_submission(tmp_path / "s.mbox", None)
    assert [p.subject for p in sub.patches] == ["[PATCH 1/2] x", "[PATCH 2/2] y"]


def test_no_patch_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("Thanks, looks good.\n")
    with pytest.raises(InputError, match=r"note\.txt: no patch found"):
        series.read_submission(tmp_path / "note.txt", None)


def test_the_repair_series_without_the_posted_patch_itself(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.patch").write_text(POSTED)
    sub = series.read_submission(tmp_path / "p.patch", None)
    sub = series.Submission(sub.path, (sub.patches[0],))
    layers = series.layers_for(sub, "rcfs", "rcfs-testss")
    assert [(layer.origin, layer.label) for layer in layers] == [
        ("posted", "the posted patch"),
        ("repair", "rcfs/0002-rcfs-re-indent-Kconfig-help-text.patch"),
        ("repair", "rcfs/0003-rcfs-restore-colon-of-elvis-operator.patch"),
        ("repair", "rcfs/0004-rcfs-name-pid-comparator-cmppid.patch"),
        ("with", "rcfs-testss/0001-rcfs-add-test-subsystems.patch")]
    made = series.make_series(tmp_path / "root", "compat", layers, ("rcfs", "rcfs-testss"))
    again = series.make_series(tmp_path / "other", "compat", layers, ("rcfs", "rcfs-testss"))
    assert made.name == again.name and made.name.startswith("review-")  # named by content
    monkeypatch.setenv("HARNESS_PATCHES", str(made.root))
    loaded = patches.load_series(made.name)
    assert loaded.chain == ("compat", made.name)  # the base is found on the shipped path
    assert [p.name for p in loaded.own_patches()] == [layer.filename for layer in layers]


def test_config_overrides_turn_on_what_the_carried_series_would(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    chain = ("compat", "review-x")
    assert "CONFIG_RCFS_TESTSS" not in config.render("default", series_chain=chain).symbols
    run.write_config_overrides(tmp_path, ("default", "debug"), ("rcfs", "rcfs-testss"))
    monkeypatch.setenv("HARNESS_CONFIGS", str(tmp_path))
    for name in ("default", "debug"):
        symbols = config.render(name, series_chain=chain).symbols
        assert symbols["CONFIG_RCFS_TESTSS"] == "y" and symbols["CONFIG_MAX_RC_SUBSYS"] == "8"
    assert config.render("debug", series_chain=chain).symbols["CONFIG_PROVE_LOCKING"] == "y"


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path) -> None:
    (tmp_path / "p.patch").write_text(SMALL)
    for args, expected in [
            (["missing.txt"], "missing.txt: no such file"),
            (["p.patch", "--repair", "nosuch"], "unknown series 'nosuch'"),
            (["p.patch", "--config", "nosuch"], "--config 'nosuch': unknown config")]:
        done = subprocess.run([sys.executable, "-m", "harness", "review", *args, "--results", "out"],
                              cwd=tmp_path, capture_output=True, text=True, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and expected in done.stderr
        assert not (tmp_path / "out").exists()
