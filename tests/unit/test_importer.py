"""harness.kernel.importer: recover clean unified diffs from damaged mail/web-archive text.

The synthetic cases damage ``tests/data/import/clean.patch`` (made with ``diff -u``
from ``tree/`` to ``expected/``) one way at a time, import it against a copy of
``tree/`` and apply the result with ``patch -p1 -F0`` (no fuzz, no offset).  The
clean patch's added lines carry no leading whitespace, so every damage below can
be undone exactly and the recovered diff must equal the clean one byte for byte.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import resources
from harness.errors import InputError
from harness.kernel.importer import import_patch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "import"
TREE = DATA / "tree"
EXPECTED = DATA / "expected"
CLEAN = (DATA / "clean.patch").read_text()
SERIES = resources.shipped("patches") / "rcfs"
SEED = SERIES / "seed" / "rcfs-core-patch-thread.txt"

needs_patch = pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch not installed")

_HUNK = re.compile(r"^@@ -(\d+),(\d+) \+(\d+),(\d+) @@")


# helpers ----------------------------------------------------------------------


def quote(text: str, prefix: str = "> ") -> str:
    """Quote every line as a mail reply does; the archive drops trailing blanks."""
    return "\n".join((prefix + line).rstrip() for line in text.split("\n"))


def strip_leading(text: str) -> str:
    """Lose leading whitespace: after the +/- marker, and the context marker itself."""
    out = []
    for line in text.split("\n"):
        if line[:1] in ("+", "-") and not line.startswith(("+++ ", "--- ")):
            line = line[0] + line[1:].lstrip()
        out.append(line.lstrip())
    return "\n".join(out)


def hunk_counts(diff: str) -> list[tuple[int, int]]:
    """Stated (old, new) counts of every hunk, after checking they match the body."""
    counts = []
    lines = diff.split("\n")
    for n, line in enumerate(lines):
        match = _HUNK.match(line)
        if not match:
            continue
        old, new = int(match[2]), int(match[4])
        seen_old = seen_new = 0
        for body in lines[n + 1 :]:
            if seen_old == old and seen_new == new:
                break
            assert body[:1] in (" ", "+", "-", "\\"), f"bad hunk line {body!r}"
            seen_old += body[:1] in (" ", "-")
            seen_new += body[:1] in (" ", "+")
        assert (seen_old, seen_new) == (old, new), line
        counts.append((old, new))
    return counts


def apply(diff: str, tmp_path: Path, tree: Path = TREE) -> Path:
    """Apply with plain ``patch -p1 -F0`` (dry run, then for real) to a copy of ``tree``."""
    work = tmp_path / "work"
    shutil.copytree(tree, work)
    patch_file = tmp_path / "recovered.patch"
    patch_file.write_bytes(diff.encode())
    for extra in (["--dry-run"], []):
        run = subprocess.run(
            ["patch", "-p1", "-F0", *extra, "-i", str(patch_file)],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "fuzz" not in run.stdout.lower(), run.stdout
        assert "offset" not in run.stdout.lower(), run.stdout
    return work


def assert_same_tree(work: Path, expected: Path = EXPECTED) -> None:
    files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert sorted(p.relative_to(work) for p in work.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (work / rel).read_bytes() == (expected / rel).read_bytes(), rel


def recover(text: str, tmp_path: Path) -> list[str]:
    """Import against the fake tree, check the diff is the clean one and applies exactly."""
    result = import_patch(text, against=TREE)
    assert result.diff == CLEAN
    assert result.files == ("src/hello.c", "src/extra.h", "NOTES")
    assert_same_tree(apply(result.diff, tmp_path))
    return list(result.warnings)


# the seed ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_text() -> str:
    return SEED.read_text()


def test_seed_without_tree(seed_text: str) -> None:
    result = import_patch(seed_text)
    assert result.files == (
        "include/linux/init_task.h",
        "include/linux/nsproxy.h",
        "include/linux/rcfs.h",
        "init/Kconfig",
        "init/main.c",
        "kernel/Makefile",
        "kernel/nsproxy.c",
        "kernel/rcfs.c",
    )
    assert result.author == "Srivatsa Vaddagiri <vatsa@in.ibm.com>"
    assert result.subject == "[PATCH 1/2] rcfs core patch"
    signed = [line for line in result.message.splitlines() if line.startswith("Signed-off-by")]
    assert signed == [
        "Signed-off-by : Srivatsa Vaddagiri <vatsa@in.ibm.com>",
        "Signed-off-by : Paul Menage <menage@google.com>",
    ]
    assert result.message.startswith("Heavily based on Paul Menage's (inturn cpuset) work.")
    assert "serge" not in result.message and "Quoting" not in result.message
    assert len(hunk_counts(result.diff)) == 14
    assert "\n@@ -608,6 +610,7 @@ asmlinkage void __init start_kernel(void\n" in result.diff
    assert "init/main.c: hunk header split from text at line 269" in result.warnings
    assert any(w.startswith("no source tree given") for w in result.warnings)
    assert "```" not in result.diff and "\n>" not in result.diff
    assert "Containers mailing list" not in result.diff and "\n+_\n" not in result.diff
    assert result.diff.count("--- /dev/null\n") == 2


def test_seed_render_layout(seed_text: str) -> None:
    rendered = import_patch(seed_text).render()
    head, _, rest = rendered.partition("\n---\n")
    assert head.startswith(
        "From: Srivatsa Vaddagiri <vatsa@in.ibm.com>\n"
        "Subject: [PATCH 1/2] rcfs core patch\n\nHeavily based"
    )
    assert head.endswith("Signed-off-by : Paul Menage <menage@google.com>")
    assert rest.startswith("--- a/include/linux/init_task.h\n+++ b/include/linux/init_task.h\n")


def test_series_layout() -> None:
    assert (SERIES / "base").read_text() == "compat\n"
    names = (SERIES / "series").read_text().split()
    assert names[0] == "0001-rcfs-core-patch.patch"
    assert [name[:4] for name in names] == [f"{n:04d}" for n in range(1, len(names) + 1)]
    for name in names[1:]:
        text = (SERIES / name).read_text()
        header = "From: Kernel Patch Harness <harness@localhost>\nSubject: [PATCH] rcfs: "
        assert text.startswith(header), name
        assert ("ARCHIVE DAMAGE" in text) != ("MISTAKE IN THE POSTED PATCH" in text), name
        assert re.search(r"\n--- a/\S+\n\+\+\+ b/\S+\n@@ ", text), name


# synthetic damage -------------------------------------------------------------


@needs_patch
def test_clean_patch_is_kept_as_is(tmp_path: Path) -> None:
    assert recover(CLEAN, tmp_path) == []


@needs_patch
@pytest.mark.parametrize("prefix", ["> ", ">", "> > ", ">> "])
def test_quote_markers(prefix: str, tmp_path: Path) -> None:
    reply = "On Monday, A Hacker <hacker@example.org> wrote:\n" + quote(CLEAN, prefix)
    warnings = recover("I like it.\n\n" + reply + "\nThanks.\n", tmp_path)
    assert any("quote markers" in w for w in warnings)


@needs_patch
def test_code_fences_and_blank_noise(tmp_path: Path) -> None:
    lines = quote(CLEAN).split("\n")
    noisy = []
    for n, line in enumerate(lines):
        noisy.append(line)
        noisy.append("")  # the archive put a blank line after every line
        if n in (8, 30):
            noisy.extend(["```", "", "```", ""])
    warnings = recover("\n".join(noisy), tmp_path)
    assert "dropped 4 code-fence lines" in warnings


@needs_patch
def test_lost_whitespace_restored_from_tree(tmp_path: Path) -> None:
    damaged = quote(strip_leading(CLEAN))
    assert "\t" not in damaged
    warnings = recover(damaged, tmp_path)
    assert "src/hello.c: hunk 2: restored 5 lines from the tree" in warnings
    assert "NOTES: hunk 1: 3 context lines had lost their leading space" in warnings


@needs_patch
def test_hunk_header_split_from_text(tmp_path: Path) -> None:
    damaged = quote(CLEAN.replace("\n@@ -36,6", "\n   @@ -36,6"))
    line = damaged.split("\n").index(">    @@ -36,6 +37,8 @@") + 1
    warnings = recover(damaged, tmp_path)
    assert f"src/hello.c: hunk header split from text at line {line}" in warnings


@needs_patch
def test_hunk_header_glued_to_text(tmp_path: Path) -> None:
    damaged = CLEAN.replace(" static int counter;\n@@ -36,6", " static int counter;@@ -36,6")
    warnings = recover(damaged, tmp_path)
    assert "src/hello.c: hunk header glued to text at line 10" in warnings


@needs_patch
def test_wrong_counts_are_recomputed(tmp_path: Path) -> None:
    damaged = CLEAN.replace("@@ -2,6 +2,7 @@", "@@ -2,9 +2,3 @@").replace("+1,4 @@", "+1,9 @@")
    warnings = recover(damaged, tmp_path)
    assert "src/hello.c: hunk 1: @@ -2,9 +2,3 @@ recounted as @@ -2,6 +2,7 @@" in warnings
    assert "src/extra.h: hunk 1: @@ -0,0 +1,9 @@ recounted as @@ -0,0 +1,4 @@" in warnings


@needs_patch
def test_wrong_start_line_is_found_nearby(tmp_path: Path) -> None:
    warnings = recover(CLEAN.replace("@@ -36,6 +37,8 @@", "@@ -30,6 +31,8 @@"), tmp_path)
    assert "src/hello.c: hunk 2: found at line 36, stated 30" in warnings


@needs_patch
def test_bare_lines_noise_versus_real_empty_context(tmp_path: Path) -> None:
    lines = quote(CLEAN).split("\n")
    # noise after "#include <stdio.h>" (no blank line there in the file), after a real
    # empty context line, and inside the new file; the real empty lines stay bare ">".
    for added in ("> +#define EXTRA_H", "> +#include <stdlib.h>"):  # the later one first
        lines.insert(lines.index(added), ">")
    lines.insert(lines.index(">  End.") - 1, ">")
    assert lines.count(">") == quote(CLEAN).split("\n").count(">") + 3
    warnings = recover("\n".join(lines), tmp_path)
    assert "src/hello.c: hunk 1: dropped 1 bare noise lines" in warnings
    assert "NOTES: hunk 1: dropped 1 bare noise lines" in warnings
    assert "src/extra.h: hunk 1: dropped 1 bare noise lines" in warnings
    assert not [w for w in warnings if "trailing" in w or "recounted" in w]


@needs_patch
def test_unquoted_fences_and_blank_noise(tmp_path: Path) -> None:
    noisy = CLEAN.replace("+#include <stdlib.h>\n", "+#include <stdlib.h>\n\n```c\n")
    noisy = noisy.replace("+#define EXTRA_H\n", "+#define EXTRA_H\n```\n\n")
    warnings = recover("```diff\n" + noisy + "```\n", tmp_path)
    assert "src/hello.c: hunk 1: dropped 1 bare noise lines" in warnings
    assert "src/extra.h: hunk 1: dropped 1 bare noise lines" in warnings


def test_bare_lines_without_tree_follow_stated_counts() -> None:
    damaged = quote(CLEAN).replace("\n>\n>  static int counter;", "\n>\n>\n>  static int counter;")
    result = import_patch(damaged)
    assert result.diff == CLEAN
    assert "src/hello.c: hunk 1: dropped 1 bare lines as noise" in result.warnings


@needs_patch
def test_crlf_line_endings(tmp_path: Path) -> None:
    warnings = recover(quote(CLEAN).replace("\n", "\r\n"), tmp_path)
    assert "converted CRLF line endings" in warnings


@needs_patch
def test_signature_and_list_footer_are_ignored(tmp_path: Path) -> None:
    footer = "-- \nA Hacker\n\n_______________________________________________\nhackers list\n"
    end = len(CLEAN.splitlines()) + 1
    warnings = recover(CLEAN + footer, tmp_path)
    assert f"ignored 4 lines after the end of the diff at line {end}" in warnings
    quoted = quote(CLEAN + "_\n" + footer) + "\nhttps://lists.example.org/listinfo\n"
    warnings = recover(quoted, tmp_path / "quoted")
    assert f"NOTES: hunk 1: ignored 1 trailing lines at line {end}" in warnings
    assert f"ignored 4 lines after the end of the diff at line {end + 1}" in warnings


def test_message_author_subject_and_render() -> None:
    mail = (
        "From: A Hacker <hacker@example.org>\n"
        "Subject: Re: [PATCH] hello: shout\n"
        "\n"
        "Shout the last name.\n"
        "\n"
        "Signed-off-by: A Hacker <hacker@example.org>\n"
        "---\n"
        " src/hello.c | 5 ++++-\n"
        "\n" + CLEAN
    )
    result = import_patch(mail)
    assert result.author == "A Hacker <hacker@example.org>"
    assert result.subject == "[PATCH] hello: shout"
    signed = "Signed-off-by: A Hacker <hacker@example.org>\n"
    assert result.message == "Shout the last name.\n\n" + signed
    assert result.render() == (
        "From: A Hacker <hacker@example.org>\nSubject: [PATCH] hello: shout\n\n"
        + result.message
        + "---\n"
        + CLEAN
    )


def test_quoted_format_patch_prefers_its_own_headers() -> None:
    mail = (
        "Subject: Re: [PATCH] something else\n\n"
        "Quoting B Reviewer (reviewer@example.org):\n"
        "> From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\n"
        "> From: A Hacker <hacker@example.org>\n"
        "> Date: Thu, 1 Mar 2007 14:20:47 +0530\n"
        "> Subject: [PATCH] hello: shout\n"
        ">\n"
        "> Shout the last name.\n"
        "> ---\n" + quote(CLEAN)
    )
    result = import_patch(mail)
    assert (result.author, result.subject) == (
        "A Hacker <hacker@example.org>",
        "[PATCH] hello: shout",
    )
    assert result.message == "Shout the last name.\n"
    assert result.diff == CLEAN


def test_without_tree_is_valid_best_effort() -> None:
    result = import_patch(quote(strip_leading(CLEAN)))
    assert hunk_counts(result.diff) == [(6, 7), (6, 8), (0, 4), (5, 6)]
    assert result.diff.startswith("--- a/src/hello.c\n+++ b/src/hello.c\n@@ -2,6 +2,7 @@\n")
    assert any(w.startswith("no source tree given") for w in result.warnings)


# errors -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "Just a reply, no patch.\n", "--- a/x\nno plus line\n"])
def test_no_diff_raises(text: str) -> None:
    with pytest.raises(InputError, match=r"^mail\.txt: no unified diff found"):
        import_patch(text, name="mail.txt")


def test_context_not_found_names_file_and_hunk() -> None:
    damaged = CLEAN.replace("greet(argv[i]);", "greet(argv[j]);")
    expected = f"src/hello.c: hunk 2 (@@ -36,6 +37,8 @@): context not found in {TREE} near line 36"
    with pytest.raises(InputError, match=f"^{re.escape(expected)}$"):
        import_patch(damaged, against=TREE)


def test_changed_file_missing_from_tree() -> None:
    damaged = CLEAN.replace("a/NOTES\n+++ b/NOTES", "a/README\n+++ b/README")
    with pytest.raises(InputError, match=r"^README: not found in "):
        import_patch(damaged, against=TREE)
