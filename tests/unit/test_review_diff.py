"""Unified diffs as data: numbering, tracing a tree line back to the patch, quoting hunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import resources
from harness.review import diff
from harness.review.buildcheck import without_lines

RCFS = resources.shipped("patches") / "rcfs"


def _patch(name: str) -> diff.PatchDiff:
    return diff.parse_diff((RCFS / name).read_text(), name)


@pytest.fixture(scope="module")
def posted() -> diff.PatchDiff:
    return _patch("0001-rcfs-core-patch.patch")


SMALL = """\
Subject: x

--- a/f.c
+++ b/f.c
@@ -2,4 +2,5 @@ int main(void)
 a
-b
+B
+B2
 c
 d
@@ -20,3 +21,2 @@
 x
-y
 z
"""


def test_lines_are_numbered_on_both_sides() -> None:
    p = diff.parse_diff(SMALL)
    (fd,) = p.files
    assert fd.path == "f.c" and not fd.created
    first, second = fd.hunks
    assert [(ln.kind, ln.old, ln.new) for ln in first.lines] == [
        (" ", 2, 2), ("-", 3, None), ("+", None, 3), ("+", None, 4), (" ", 4, 5), (" ", 5, 6)]
    assert (second.new_start, second.new_end) == (21, 22)


def test_a_line_goes_back_to_its_number_before_the_patch_or_to_the_patch_itself() -> None:
    p = diff.parse_diff(SMALL)
    assert diff.to_older(p, "f.c", 1) == 1      # above every hunk
    assert diff.to_older(p, "f.c", 3) is None   # added by the patch
    assert diff.to_older(p, "f.c", 5) == 4      # context inside a hunk
    assert diff.to_older(p, "f.c", 10) == 9     # between hunks: one line added net
    assert diff.to_older(p, "f.c", 30) == 30    # below both: +1 and -1
    assert diff.to_older(p, "other.c", 7) == 7  # a file it does not touch


def test_trace_line_names_the_patch_of_the_series_that_added_it(posted: diff.PatchDiff) -> None:
    colon = _patch("0003-rcfs-restore-colon-of-elvis-operator.patch")
    cmppid = _patch("0004-rcfs-name-pid-comparator-cmppid.patch")
    series = [posted, colon, cmppid]
    assert diff.trace_line(series, "kernel/rcfs.c", 198) == diff.Origin(1, 198)  # the repaired line
    assert diff.trace_line(series, "kernel/rcfs.c", 428) == diff.Origin(0, 428)  # the posted one
    assert diff.trace_line(series, "kernel/fork.c", 117) == diff.Origin(None, 117)


def test_quote_ends_at_the_line_and_starts_at_its_function(posted: diff.PatchDiff) -> None:
    hunk = diff.hunk_at(posted, "kernel/rcfs.c", 198)
    assert hunk is not None and hunk.header == "@@ -0,0 +1,1140 @@"
    assert diff.function_of(hunk, 198) == "parse_rcfs_options"
    quoted = diff.quote(hunk, 198).splitlines()
    assert quoted[0] == "> @@ -0,0 +1,1140 @@" and quoted[1] == "> [...]"
    assert quoted[2] == "> +static int parse_rcfs_options(char *opts, unsigned long *bits)"
    assert quoted[-2] == '> + char *token, *o = opts ? "all";' and quoted[-1] == "> [...]"
    assert all(line.startswith(">") for line in quoted)


def test_a_short_hunk_is_quoted_from_its_start(posted: diff.PatchDiff) -> None:
    hunk = diff.hunk_at(posted, "init/Kconfig", 249)
    assert hunk is not None
    quoted = diff.quote(hunk, 249).splitlines()
    assert quoted[0].startswith("> @@ -238,6 +238,28 @@") and "> +config RCFS" in quoted
    assert quoted[-2] == "> + Say N if unsure" and quoted[-1] == "> [...]"


def test_find_definition(posted: diff.PatchDiff) -> None:
    found = diff.find_definition(posted, "rcfs_tasks_read")
    assert found is not None and found[0].path == "kernel/rcfs.c"
    line = found[0].at_new(found[1])
    assert line is not None and line.text.startswith("static ssize_t rcfs_tasks_read(")
    assert diff.find_definition(posted, "no_such_function") is None


def test_without_lines_drops_added_lines_and_recounts(posted: diff.PatchDiff, tmp_path: Path) -> None:
    text = (RCFS / "0001-rcfs-core-patch.patch").read_text()
    smaller = without_lines(text, {("init/Kconfig", 249)})
    again = diff.parse_diff(smaller)
    hunk = again.file("init/Kconfig").hunks[0]  # type: ignore[union-attr]
    assert hunk.header.startswith("@@ -238,6 +238,27 @@")
    assert "Say N if unsure" not in [ln.text.strip() for ln in hunk.lines]
    # every other file is the same, hunk for hunk
    for old, new in zip(posted.files, again.files, strict=True):
        if old.path != "init/Kconfig":
            assert [h.lines for h in old.hunks] == [h.lines for h in new.hunks]
    assert smaller.startswith("From: Srivatsa Vaddagiri")
