"""Build problems from recorded build logs of the posted rcfs patch, quoted against their hunks."""

from __future__ import annotations

from pathlib import Path

from harness import resources
from harness.review import diff
from harness.review.buildcheck import parse_build_log
from harness.review.locate import at_tree_line

DATA = Path(__file__).resolve().parent.parent / "data" / "review"
RCFS = resources.shipped("patches") / "rcfs"
PREFIXES = ("/CACHE/builds/ENTRY/src", "/CACHE/builds/ENTRY/out")


def _posted() -> diff.PatchDiff:
    return diff.parse_diff((RCFS / "0001-rcfs-core-patch.patch").read_text())


def test_compiler_errors_with_function_and_gcc_excerpt() -> None:
    problems = parse_build_log((DATA / "build-posted.log").read_text(), PREFIXES)
    assert [(p.kind, p.where, p.message) for p in problems] == [
        ("compile", "kernel/rcfs.c:198:32", "error: expected ':' before ';' token"),
        ("compile", "kernel/rcfs.c:428:39",
         "error: 'cmppid' undeclared (first use in this function); did you mean 'cmpid'?"),
    ]
    first, second = problems
    assert (first.function, second.function) == ("parse_rcfs_options", "rcfs_tasks_open")
    assert first.context[0] == '  198 |  char *token, *o = opts ? "all";'
    assert second.context[-1].endswith("| " + " " * 38 + "cmpid")  # gcc's suggestion


def test_kconfig_error() -> None:
    (problem,) = parse_build_log((DATA / "build-kconfig.log").read_text(), PREFIXES)
    assert (problem.kind, problem.path, problem.line, problem.message) == (
        "kconfig", "init/Kconfig", 249, 'unknown option "Say"')


def test_a_log_without_a_known_error_gives_the_make_lines() -> None:
    (problem,) = parse_build_log("  CC kernel/x.o\nmake[1]: *** [kernel] Error 2\n")
    assert problem.kind == "make" and "Error 2" in problem.message


def test_link_errors_name_the_function() -> None:
    log = ("  LD      vmlinux\nld: kernel/built-in.o: in function `rcfs_init':\n"
           "rcfs.c:(.init.text+0x12): undefined reference to `rc_missing'\n")
    (problem,) = parse_build_log(log)
    assert (problem.kind, problem.function, problem.message) == (
        "link", "rcfs_init", "undefined reference to 'rc_missing'")


def test_each_problem_is_quoted_against_the_posted_hunk_it_comes_from() -> None:
    posted = _posted()
    for path, line, expected in [
            ("kernel/rcfs.c", 198, '+ char *token, *o = opts ? "all";'),
            ("kernel/rcfs.c", 428, "+ sort(pidarray, npids, sizeof(pid_t), cmppid, NULL);"),
            ("init/Kconfig", 249, "+ Say N if unsure")]:
        loc = at_tree_line([posted], path, line, "build")
        assert loc is not None and loc.layer == 0 and loc.line == line
        quoted = loc.quote().splitlines()
        assert quoted[0].startswith("> @@ ")
        assert f"> {expected}" in quoted
        assert quoted[-1] == "> [...]" and quoted[-2] == f"> {expected}"


def test_a_problem_in_a_line_of_a_later_patch_is_that_patch_s() -> None:
    repair = diff.parse_diff((RCFS / "0003-rcfs-restore-colon-of-elvis-operator.patch").read_text())
    loc = at_tree_line([_posted(), repair], "kernel/rcfs.c", 198, "build")
    assert loc is not None and loc.layer == 1
    assert at_tree_line([_posted(), repair], "kernel/fork.c", 117, "build") is None
