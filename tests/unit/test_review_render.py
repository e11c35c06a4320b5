"""review.txt and the bug rows of index.html, rendered from recorded inputs (no build, no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import resources
from harness.kernel.build import Toolchain
from harness.kernel.importer import ImportedPatch
from harness.results import SessionRecords, load_summary, render_html
from harness.review import bugs, render
from harness.review.buildcheck import ConfigBuild, parse_build_log
from harness.review.locate import at_tree_line, for_operation, for_report
from harness.review.run import Options, Problem, Review
from harness.review.series import Layer, Submission, make_series

DATA = Path(__file__).resolve().parent.parent / "data" / "review"
PATCHES = resources.shipped("patches")
TOOLS = Toolchain("gcc -m32", "gcc (Debian 12.2.0-14) 12.2.0", "GNU ld 2.40", "GNU Make 4.3")


def _review(tmp_path: Path, *, repaired: bool) -> Review:
    posted = (PATCHES / "rcfs" / "0001-rcfs-core-patch.patch").read_text()
    layers = [Layer("posted", "the posted patch", "0001-posted.patch", posted)]
    if repaired:
        for n, name in enumerate(sorted((PATCHES / "rcfs").glob("000[234]-*.patch")), 2):
            layers.append(Layer("repair", f"rcfs/{name.name}", f"{n:04d}-repair.patch", name.read_text()))
    testss = next((PATCHES / "rcfs-testss").glob("0001-*.patch"))
    layers.append(Layer("with", f"rcfs-testss/{testss.name}", f"{len(layers) + 1:04d}-with.patch",
                        testss.read_text()))
    series = make_series(tmp_path / "patches", "compat", layers, ("rcfs", "rcfs-testss"))
    submission = Submission(Path("seed.txt"), (ImportedPatch("V <v@x>", "[PATCH 1/2] rcfs core patch",
                                                             "", "", (), ()),))
    return Review(Options(Path("seed.txt"), repair="rcfs" if repaired else None), tmp_path, submission,
                  series, "a 2.6.20 tree (id git-5759bb8f)", TOOLS)


@pytest.fixture
def broken(tmp_path: Path) -> Review:
    rv = _review(tmp_path, repaired=False)
    rv.builds = [ConfigBuild("default"), ConfigBuild("debug")]
    for p in parse_build_log((DATA / "build-posted.log").read_text(), ("/CACHE/builds/ENTRY/src",)):
        rv.problems.append(Problem(p, at_tree_line(rv.diffs, p.path or "", p.line or 0, "build"), True))
    return rv


def test_a_patch_that_does_not_build(broken: Review) -> None:
    text = render.review_text(broken)
    assert broken.exit_code == 1
    assert text.startswith("Subject: Re: [PATCH 1/2] rcfs core patch\n")
    assert "The patch does not build: 2 build problem(s), quoted below; the suite could\nnot run." in text
    for header, quoted, error in [
            ("Build problem 1: kernel/rcfs.c:198:32: error: expected ':' before ';' token",
             '> + char *token, *o = opts ? "all";', "kernel/rcfs.c: In function 'parse_rcfs_options':"),
            ("Build problem 2: kernel/rcfs.c:428:39: error: 'cmppid' undeclared",
             "> + sort(pidarray, npids, sizeof(pid_t), cmppid, NULL);",
             "kernel/rcfs.c: In function 'rcfs_tasks_open':")]:
        section = text[text.index(header):]
        section = section[:section.index("\n\n", section.index("gcc says:"))]
        assert "In the posted patch, kernel/rcfs.c:" in section
        # the hunk quoted up to the line, then the compiler's words
        assert section.index(quoted) < section.index("gcc says:") < section.index(error)
    assert "  toolchain:  gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40; GNU Make 4.3" in text
    assert "  build:      review-" in text and "/default: FAILED" in text


def test_one_section_per_bug_with_what_the_test_did_happened_and_expected(tmp_path: Path) -> None:
    rv = _review(tmp_path, repaired=True)
    rv.builds = [ConfigBuild("default")]
    summary = rv.summary = load_summary(DATA / "summary-testss.json")
    traces = {(t.kernel, n): t for n, t in SessionRecords.load(DATA / "records-testss.json").traces.items()}
    failed = bugs.failed_tests(summary.tests, traces, {b.id: b.kernel for b in summary.builds})
    functions = {"rcfs_tasks_read", "rcfs_common_file_write"}
    rv.bugs = bugs.group(failed, functions)
    for bug in rv.bugs:
        if bug.report is not None:
            found = for_report(bug.report, rv.diffs, rv.posted, None, None)
            bug.location = found[0] if found else None
        elif (step := bug.first.failing_step) is not None:
            bug.location = for_operation(step, rv.diffs, rv.posted)
    for t in failed:
        rv.repro[f"{t.nodeid}@{t.kernel}"] = f"repro/{t.function}.sh"
    text = render.review_text(rv)
    assert rv.exit_code == 1
    assert "Found 7 distinct bug(s), from 14 failing test(s)." in text
    sections = text.split("\nBug ")[1:]
    assert len(sections) == 7
    eio = next(s for s in sections if "write handler" in s)
    assert "4 failing test(s):" in eio
    assert "> + return -EIO;" in eio
    assert "  $ rcfs-probe -e write /mnt/rcfs1/c/tasks" in eio
    assert "What happened:\n  the last command exited 1, printing:\n    open: OK\n    write: EIO" in eio
    assert eio.startswith("2: tasks write: non-numeric input fails with EIO instead of EINVAL\n")
    assert "What was expected:\n  the test asserts: assert (result.failed_step, result.errno) == " \
           "(\"write\", \"EINVAL\"), str(result)\n" \
           "  (with the values seen: assert ('write', 'EIO') == ('write', 'EINVAL'))" in eio
    assert "Reproducer: repro/test_non_numeric_write_is_einval.sh" in eio
    oops = next(s for s in sections if s.split(":", 1)[1].startswith(" kernel oops"))
    assert "found from call trace: rcfs_tasks_read+0x4d" in " ".join(oops.split())
    assert "EIP is at copy_to_user+0x30/0x40" in oops
    assert "> +static ssize_t rcfs_tasks_read(" in oops
    rows = render.bug_rows(rv)
    page = render_html(summary, bugs=rows)
    assert page.index('id="bugs"') < page.index('id="matrix"')
    assert page.count('class="bug"') == 7 and "repro/test_read_past_end_is_eof.sh" in page


def test_nothing_found(tmp_path: Path) -> None:
    rv = _review(tmp_path, repaired=True)
    rv.builds = [ConfigBuild("default")]
    rv.summary = load_summary(DATA / "summary-testss.json")
    rv.summary.tests = [t for t in rv.summary.tests if False]
    assert rv.exit_code == 0
    assert "No bug found" in render.review_text(rv)


def test_could_not_test(broken: Review) -> None:
    broken.problems = []
    broken.cannot.append("debug: the build failed: no space left")
    assert broken.exit_code == 2
    assert "Not tested\n----------\n  debug: the build failed: no space left" in render.review_text(broken)
