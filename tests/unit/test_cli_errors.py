"""Bad input on the command line: exit 2, one line on stderr, nothing on stdout, nothing cached.

Every case runs ``harness.cli.main`` in-process against the empty cache that
tests/conftest.py gives each unit test.  The line on stderr must name the
input (the value given) and say what was expected.  Cases that need a kernel
tree use a tiny fake 2.6.20 tree; the source stage caches a copy of it in
``sources/`` before the bad input is found, which is allowed, so those cases
compare only ``builds/``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import cache, cli
from harness.kernel import config

FAKE_MAKEFILE = "VERSION = 2\nPATCHLEVEL = 6\nSUBLEVEL = 20\nEXTRAVERSION =\nNAME = Homicidal Dwarf Hamster\n"
# int symbols of the default config and the range the rcfs patch gives them
RANGES = {"CONFIG_MAX_RC_SUBSYS": (1, 255), "CONFIG_MAX_RC_HIERARCHIES": (2, 255)}


def listing(root: Path) -> list[str]:
    """Every path below ``root`` (files and directories), relative, sorted."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def fake_kernel_tree(path: Path) -> Path:
    """A 2.6.20 tree whose Kconfig declares every symbol of the default config (nothing else)."""
    (path / "init").mkdir(parents=True)
    (path / "Makefile").write_text(FAKE_MAKEFILE)
    symbols = config.render("default", series_chain=("fake",)).symbols
    lines: list[str] = []
    for symbol in symbols:
        name = symbol.removeprefix("CONFIG_")
        if symbol in RANGES:
            low, high = RANGES[symbol]
            lines += [f"config {name}", "\tint", f"\trange {low} {high}", "\tdefault 8", ""]
        else:
            lines += [f"config {name}", "\tbool", ""]
    (path / "init" / "Kconfig").write_text("\n".join(lines))
    return path


NEW_FILE_PATCH = """\
Subject: [PATCH] add a file

---
--- /dev/null
+++ b/NOTES
@@ -0,0 +1 @@
+fake
"""

BROKEN_PATCH = """\
Subject: [PATCH] edit the Makefile against the wrong context

---
--- a/Makefile
+++ b/Makefile
@@ -1,3 +1,3 @@
 VERSION = 3
-PATCHLEVEL = 6
+PATCHLEVEL = 7
 SUBLEVEL = 20
"""


def patches_root(tmp_path: Path, series: dict[str, dict[str, str]]) -> Path:
    """A HARNESS_PATCHES root: {series name: {file name: contents}} (``series`` included)."""
    root = tmp_path / "patches"
    for name, files in series.items():
        (root / name).mkdir(parents=True)
        for filename, text in files.items():
            (root / name / filename).write_text(text)
    return root


def expect_one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str,
                          compare: Callable[[], list[str]] | None = None) -> str:
    """Run the CLI; assert exit 2, nothing on stdout, one stderr line containing ``needles``,
    and no change in ``compare()`` (default: the whole cache)."""
    snapshot = compare or (lambda: listing(cache.root()))
    before = snapshot()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, f"exit {code}; stderr: {err!r}"
    assert out == "", f"stdout: {out!r}"
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("harness: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    after = snapshot()
    assert after == before, f"the cache changed: {sorted(set(after) ^ set(before))}"
    return line


def builds_only() -> list[str]:
    return listing(cache.root() / "builds")


# --- names ---------------------------------------------------------------------------


def test_unknown_config(capsys: pytest.CaptureFixture[str]) -> None:
    expect_one_line_error(capsys, ["build", "--config", "nope"], "'nope'", "expected one of", "default")


def test_unknown_series(capsys: pytest.CaptureFixture[str]) -> None:
    expect_one_line_error(capsys, ["build", "--series", "nope"], "'nope'", "expected one of", "rcfs")


@pytest.mark.parametrize("value", ["FOO", "=1", "CONFIG_X="])
def test_malformed_set(capsys: pytest.CaptureFixture[str], value: str) -> None:
    expect_one_line_error(capsys, ["build", "--set", value], f"--set {value!r}", "expected SYMBOL=VALUE")


# --- things that need a (fake) kernel tree ----------------------------------------------


def test_out_of_range_integer(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    tree = fake_kernel_tree(tmp_path / "linux")
    monkeypatch.setenv("HARNESS_PATCHES", str(patches_root(tmp_path, {
        "fake": {"series": "0001-notes.patch\n", "0001-notes.patch": NEW_FILE_PATCH}})))
    # the source stage caches a copy of the fake tree first (allowed): compare builds/ only
    expect_one_line_error(
        capsys, ["build", "--series", "fake", "--kernel-src", str(tree), "--set", "CONFIG_MAX_RC_SUBSYS=0"],
        "CONFIG_MAX_RC_SUBSYS=0", "allowed 1..255", compare=builds_only)


def test_patch_that_does_not_apply(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tree = fake_kernel_tree(tmp_path / "linux")
    monkeypatch.setenv("HARNESS_PATCHES", str(patches_root(tmp_path, {
        "broken": {"series": "0001-wrong-context.patch\n", "0001-wrong-context.patch": BROKEN_PATCH}})))
    # the source stage caches a copy of the fake tree first (allowed): compare builds/ only
    expect_one_line_error(capsys, ["build", "--series", "broken", "--kernel-src", str(tree)],
                          "broken/0001-wrong-context.patch", "Makefile", compare=builds_only)


def test_series_file_names_a_missing_patch(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_PATCHES", str(patches_root(tmp_path, {
        "damaged": {"series": "0001-here.patch\n0002-gone.patch\n", "0001-here.patch": NEW_FILE_PATCH}})))
    expect_one_line_error(capsys, ["build", "--series", "damaged"], "series:2", "'0002-gone.patch'",
                          "does not exist")


def test_empty_series_file(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_PATCHES", str(patches_root(tmp_path, {
        "empty": {"series": "# nothing yet\n\n"}})))
    expect_one_line_error(capsys, ["build", "--series", "empty"], "empty/series", "lists no patches",
                          "expected one patch file name per line")


def test_nonexistent_kernel_src(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-linux"
    expect_one_line_error(capsys, ["build", "--kernel-src", str(missing)], str(missing),
                          "no such file or directory", "expected a 2.6.20 directory")


def test_git_ref_that_does_not_exist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "linux.git"
    repo.mkdir()
    (repo / "Makefile").write_text(FAKE_MAKEFILE)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "2.6.20"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env, capture_output=True)
    expect_one_line_error(capsys, ["build", "--kernel-src", f"{repo}@nope"], "'nope'",
                          "is not a commit", str(repo))


# --- other commands ------------------------------------------------------------------


def test_bisect_unknown_test_id(capsys: pytest.CaptureFixture[str]) -> None:
    expect_one_line_error(capsys, ["bisect", "--series", "rcfs", "--test", "tests/rcfs/test_nope.py::x"],
                          "tests/rcfs/test_nope.py::x")


@pytest.mark.parametrize("argv", [["run"], ["run", "--"]], ids=["nothing", "dashdash"])
def test_run_without_a_command(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    expect_one_line_error(capsys, argv, "no command given", "expected: harness run")


def test_ssh_without_a_kept_vm(capsys: pytest.CaptureFixture[str]) -> None:
    expect_one_line_error(capsys, ["ssh"], "no kept VM", "harness boot --keep")


@pytest.mark.parametrize("value", ["0/2", "x", "3/2"])
def test_test_bad_shard(capsys: pytest.CaptureFixture[str], value: str, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a results/ directory would appear here
    expect_one_line_error(capsys, ["test", "--shard", value], f"--shard {value!r}", "expected I/N")
    assert not any(tmp_path.iterdir())


# --- hostile or impossible values, refused before any work (issue 12) ----------------------


@pytest.mark.parametrize("value", [
    'CONFIG_LOCALVERSION="$$(id>{marker})"',
    'CONFIG_LOCALVERSION="$(shell id>{marker})"',
    'CONFIG_LOCALVERSION="`id>{marker}`"',
    'CONFIG_LOCALVERSION="a;id>{marker}"',
    'CONFIG_LOCALVERSION="a\\"b"',
    'CONFIG_LOCALVERSION="a\nb"',
    "CONFIG_LOCALVERSION=$(id>{marker})",
], ids=["dollar-dollar", "make-shell", "backquotes", "semicolon", "inner-quote", "newline",
        "unquoted"])
def test_a_set_value_make_or_a_shell_would_evaluate_is_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str) -> None:
    marker = tmp_path / "ran"
    text = value.format(marker=marker)
    line = expect_one_line_error(capsys, ["build", "--set", text], "--set ")
    assert "letters, digits, spaces" in line or "expected y, m, n, a number" in line, line
    assert not marker.exists()


def test_a_safe_string_value_passes_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    # accepted by the check: the command goes on and fails later for want of a source
    code = cli.main(["build", "--set", 'CONFIG_LOCALVERSION="-rc1 test:a/b=c,d+e_f.g"'])
    assert code == 2 and "no Linux 2.6.20 source available" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["build", "-j", "-3"], ["build", "-j", "0"], ["build", "--force", "-j", "-3"],
    ["bisect", "--series", "rcfs", "--test", "x.py::t", "-j", "0"], ["test", "-j", "-1"],
])
def test_a_job_count_below_one_is_refused_up_front(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   argv: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    value = argv[argv.index("-j") + 1]
    expect_one_line_error(capsys, argv, f"-j {value}: expected", "1 or more")
    assert not any(tmp_path.iterdir())


def test_a_junk_tarball_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(bytes(range(256)) * 8)
    expect_one_line_error(capsys, ["source", "--kernel-src", str(junk)], str(junk),
                          "not a tar archive", compare=lambda: listing(cache.root() / "sources"))


def test_readme_exit_code_table_is_the_code_table() -> None:
    """README.md's exit-code table says exactly what ``errors.EXIT_CODES`` says, in its order."""
    from harness.errors import EXIT_CODES

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n\n| code | meaning |", 1)[1]
    rows = [line for line in section.split("\n\n", 1)[0].splitlines() if line.startswith("| ")]
    table = [tuple(cell.strip() for cell in row.strip("|").split(" | ", 1)) for row in rows[1:]]
    assert table == [(str(int(code)), meaning) for code, meaning in EXIT_CODES]
