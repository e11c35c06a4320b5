"""Kernel reports recorded on the posted rcfs patch: EIP and call trace, mapped to the patch."""

from __future__ import annotations

from pathlib import Path

from harness import resources
from harness.review import diff
from harness.review.locate import for_report
from harness.review.oops import Frame, SymbolMap, parse_reports

DATA = Path(__file__).resolve().parent.parent / "data" / "review"
POSTED = diff.parse_diff((resources.shipped("patches") / "rcfs" / "0001-rcfs-core-patch.patch").read_text())


def test_oops_eip_and_trace() -> None:
    (report,) = parse_reports((DATA / "oops-read-past-end.txt").read_text())
    assert report.kind == "oops" and report.title == "invalid opcode: 0000 [#1]"
    assert report.eip == Frame(0xC018A040, "copy_to_user", 0x30)
    # the "+0x0" entries are stale pointers to function starts, not frames
    assert [str(f) for f in report.frames[:3]] == [
        "copy_to_user+0x30 [<c018a040>]", "rcfs_tasks_read+0x4d [<c012af8d>]",
        "rcfs_file_read+0x35 [<c012aba5>]"]


def test_a_warning_and_an_oops_in_one_excerpt() -> None:
    reports = parse_reports((DATA / "oops-refused-attach.txt").read_text())
    assert [r.kind for r in reports][:2] == ["warning", "oops"]
    warning = reports[0]
    assert warning.eip is None  # a WARN_ON prints no registers, only its stack
    assert [f.function for f in warning.frames][:2] == ["__put_task_struct", "rcfs_common_file_write"]


def test_system_map_gives_function_and_offset() -> None:
    symbols = SymbolMap((DATA / "System.map.excerpt").read_text())
    assert symbols.lookup(0xC018A040) == ("copy_to_user", 0x30)
    assert symbols.lookup(0xC012AF8D) == ("rcfs_tasks_read", 0x4D)
    assert symbols.lookup(0x100) is None
    # a report without names (no KALLSYMS) gets them from System.map
    assert symbols.symbolize(Frame(0xC012AF8D)) == Frame(0xC012AF8D, "rcfs_tasks_read", 0x4D)


def test_the_first_frame_in_the_posted_patch_is_quoted() -> None:
    (report,) = parse_reports((DATA / "oops-read-past-end.txt").read_text())
    found = for_report(report, [POSTED], [0], None, None)  # no build: the function's start
    assert found is not None
    location, frame = found
    assert frame.function == "rcfs_tasks_read"  # copy_to_user is not the patch's
    assert location.function == "rcfs_tasks_read" and location.path == "kernel/rcfs.c"
    assert "call trace: rcfs_tasks_read+0x4d" in location.how
    assert location.quote().splitlines()[-2].startswith("> +static ssize_t rcfs_tasks_read(")


def test_raw_addresses_are_named_through_system_map() -> None:
    text = ("oops: invalid opcode: 0000 [#1]\ninvalid opcode: 0000 [#1]\n"
            "EIP:    0060:[<c018a040>]    Not tainted VLI\nCall Trace:\n [<c012af8d>] \n [<c012aba5>] \n")
    (report,) = parse_reports(text)
    assert report.eip == Frame(0xC018A040) and report.frames[1] == Frame(0xC012AF8D)
    symbols = SymbolMap((DATA / "System.map.excerpt").read_text())
    found = for_report(report, [POSTED], [0], symbols, None)
    assert found is not None and found[1].function == "rcfs_tasks_read"


def test_raw_console_text_is_cut_into_reports() -> None:
    lines = ["boot", "BUG: at kernel/fork.c:117 __put_task_struct()",
             " [<c012ab55>] rcfs_file_write+0x35/0x50"]
    lines += [f"noise {n}" for n in range(10)]
    lines += ["BUG: unable to handle kernel NULL pointer dereference at virtual address 00000000",
              "Oops: 0000 [#1]", "EIP:    0060:[<00000000>]    Not tainted VLI"]
    first, second = parse_reports("\n".join(lines))
    assert (first.kind, second.kind) == ("warning", "oops")
    assert [f.function for f in first.frames] == ["rcfs_file_write"] and first.eip is None
    assert second.eip == Frame(0) and second.title.startswith("BUG: unable to handle")
