"""Patch coverage (harness.coverage): parsers on recorded tool output, the plan, the union, the page."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.coverage import added, debuginfo, flavour, page, plan, report
from harness.coverage.plan import FilePlan, KernelPlan
from harness.errors import InputError
from harness.kernel import patches
from harness.machine import snapshot
from harness.machine.qemu import VMConfig, qemu_argv
from harness.run import matrix, target
from harness.run.target import BootOptions, KernelSpec

DATA = Path(__file__).resolve().parents[1] / "data" / "coverage"
RCFS = "kernel/rcfs.c"
NSPROXY_H = "include/linux/nsproxy.h"
DIPUT_LINES = {983, 985, 986, 988, 989, 991, 992}  # rcfs.c lines with code in rcfs_diput


def _text(name: str) -> str:
    return (DATA / name).read_text()


# --- the lines a series adds -------------------------------------------------------------


def test_scoped_files_are_the_c_files_of_the_series_less_its_root() -> None:
    series = patches.load_series("rcfs-fixes")
    assert series.chain[0] == "compat"  # kernel/mutex.c of compat is not measured
    assert added.scoped_files(series) == [
        "include/linux/init_task.h", "include/linux/nsproxy.h", "include/linux/rcfs.h", "init/main.c",
        "kernel/nsproxy.c", "kernel/rcfs.c", "kernel/rcfs_testss.c"]


def test_files_of_patch_skips_non_c_files_and_deletions() -> None:
    text = ("--- a/init/Kconfig\n+++ b/init/Kconfig\n@@ -1 +1 @@\n"
            "--- a/kernel/gone.c\n+++ /dev/null\n"
            "--- /dev/null\n+++ b/kernel/new.c\t2007-01-01\n"
            "--- a/include/linux/x.h\n+++ b/include/linux/x.h\n")
    assert added.files_of_patch(text) == ["kernel/new.c", "include/linux/x.h"]


def test_added_lines_are_numbered_in_the_patched_file() -> None:
    old = "a\nb\nc\nd\n"
    new = "a\nB\nc\nnew1\nnew2\nd\n"  # b replaced, two lines inserted
    assert added.added_lines(old, new) == [2, 4, 5]
    assert added.added_lines("", "x\ny\n") == [1, 2]  # a new file: every line
    assert added.added_lines(old, "a\nc\nd\n") == []  # a removal adds nothing


def test_hunks_carry_context_and_new_line_numbers() -> None:
    old = "".join(f"{n}\n" for n in range(1, 21))
    new = old.replace("10\n", "ten\n")
    [hunk] = added.hunks(old, new, context=2)
    assert [(d.kind, d.number, d.text) for d in hunk] == [
        (" ", 8, "8"), (" ", 9, "9"), ("-", None, "10"), ("+", 10, "ten"), (" ", 11, "11"), (" ", 12, "12")]


# --- binutils output ------------------------------------------------------------------------


def test_parse_nm_keeps_functions_with_a_size() -> None:
    functions = debuginfo.parse_nm(_text("nm.txt"))
    assert [(f.name, hex(f.start), f.size) for f in functions] == [
        ("rcfs_file_release", "0xc012ac60", 0x13), ("rcfs_diput", "0xc012ac80", 0x4d),
        ("rcfs_clear_directory", "0xc012acd0", 0x70), ("iput", "0xc01590d0", 0x75)]


def test_line_rows_are_picked_by_base_name() -> None:
    text = _text("decodedline.txt")
    rows = debuginfo.parse_line_rows(text, {"rcfs.c"})
    assert rows[0] == 0xc012ac60 and 0xc012acac in rows and 0xc012acd0 in rows
    assert 0xc012ab1f not in rows  # kernel/irq/proc.c
    assert 0xc012aca8 not in rows  # only atomic.h and nsproxy.h rows there
    assert 0xc012aca8 in debuginfo.parse_line_rows(text, {"nsproxy.h"})
    assert debuginfo.parse_line_rows(text, set()) == []
    assert debuginfo.has_line_rows(text)
    assert not debuginfo.has_line_rows("vmlinux:     file format elf32-i386\n\n")


def test_instructions_and_their_inline_chains() -> None:
    instructions = debuginfo.parse_instructions(_text("objdump-d.txt"))
    assert len(instructions) == 27 and instructions[0] == 0xc012ac80 and instructions[-1] == 0xc012accb
    chains = debuginfo.parse_addr2line(_text("addr2line.txt"))
    assert set(chains) == set(instructions)
    chain = chains[0xc012aca3]  # atomic_dec_and_test inlined in put_nsproxy inlined in rcfs_diput
    assert [debuginfo.source_file(p, [RCFS, NSPROXY_H]) for p, _ in chain] == [None, NSPROXY_H, RCFS]
    assert [line for _, line in chain] == [126, 51, 988]
    assert chain[0][0].endswith("/out/include2/asm/atomic.h")


def test_addr2line_unknown_locations_and_discriminators() -> None:
    chains = debuginfo.parse_addr2line("0x00000010\n??:0\n"
                                       "0x00000020\n/b/src/kernel/rcfs.c:12 (discriminator 3)\n"
                                       "0x00000030\n/b/src/kernel/rcfs.c:?\n")
    assert chains == {0x10: (), 0x20: (("/b/src/kernel/rcfs.c", 12),), 0x30: ()}


def test_merge_ranges_joins_touching_ranges_and_padding_gaps_only() -> None:
    ranges = [(0x30, 0x3d), (0x10, 0x20), (0x20, 0x2b), (0x60, 0x70)]
    assert debuginfo.merge_ranges(ranges) == [(0x10, 0x2b), (0x30, 0x3d), (0x60, 0x70)]
    assert debuginfo.merge_ranges(ranges, gap=16) == [(0x10, 0x3d), (0x60, 0x70)]


Analysis = tuple[dict[str, dict[int, set[int]]], list[debuginfo.Function]]


def _analyse(added_lines: dict[str, set[int]]) -> Analysis:
    instructions = debuginfo.parse_instructions(_text("objdump-d.txt"))
    chains = debuginfo.parse_addr2line(_text("addr2line.txt"))
    basenames = {p.rsplit("/", 1)[-1] for p in added_lines}
    return plan.analyse(
        debuginfo.parse_nm(_text("nm.txt")), debuginfo.parse_line_rows(_text("decodedline.txt"), basenames),
        added_lines, lambda start, end: [a for a in instructions if start <= a < end],
        lambda addresses: {a: chains[a] for a in addresses})


def test_analyse_maps_instructions_to_added_lines_through_inlining() -> None:
    executable, traced = _analyse({RCFS: set(range(1, 1242)), NSPROXY_H: {51, 52}})
    assert set(executable[RCFS]) == DIPUT_LINES
    # the call line of an inlined function is executed by the inlined code
    assert executable[RCFS][988] == {0xc012aca3, 0xc012aca5, 0xc012aca8, 0xc012acaa, 0xc012acc3,
                                     0xc012acc8, 0xc012accb}
    assert executable[NSPROXY_H] == {51: {0xc012aca3, 0xc012aca5, 0xc012aca8, 0xc012acaa},
                                     52: {0xc012acc3, 0xc012acc8, 0xc012accb}}
    # rcfs_file_release has rows of rcfs.c but no instruction here: candidates are checked
    assert [f.name for f in traced] == ["rcfs_diput"]


def test_analyse_leaves_out_lines_that_are_not_added() -> None:
    executable, traced = _analyse({RCFS: {985, 990, 991}})
    assert set(executable[RCFS]) == {985, 991}  # 990 has no code
    assert [f.name for f in traced] == ["rcfs_diput"]
    executable, traced = _analyse({RCFS: {1, 2}})
    assert executable == {RCFS: {}} and traced == []


# --- plan, logs, union ----------------------------------------------------------------------


def _plan(key: str = "k1", label: str = "rcfs-fixes/default", series: str = "rcfs-fixes",
          source: str = "0123456789abcdef") -> KernelPlan:
    executable, traced = _analyse({RCFS: set(range(1, 1242))})
    text = "".join(f"line {n}\n" for n in range(1, 1242)).replace("line 986\n", "<script>x</script>\n")
    hunks = tuple(tuple(h) for h in added.hunks("", text))
    return KernelPlan(key=key, label=label, series=series, source=source,
                      ranges=tuple(debuginfo.merge_ranges((f.start, f.end) for f in traced)),
                      functions=tuple(f.name for f in traced),
                      files={RCFS: FilePlan(
                          tuple(range(1, 1242)), {n: tuple(sorted(a)) for n, a in executable[RCFS].items()},
                          hunks)})


def _kernel_dir(root: Path, kplan: KernelPlan, logs: dict[str, str]) -> Path:
    kdir = root / kplan.key
    kdir.mkdir(parents=True)
    (kdir / plan.PLAN).write_text(json.dumps(kplan.to_json()))
    for name, text in logs.items():
        (kdir / name).write_text(text)
    return root


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    kplan = _plan()
    assert kplan.ranges == ((0xc012ac80, 0xc012accd),) and kplan.functions == ("rcfs_diput",)
    _kernel_dir(tmp_path, kplan, {})
    assert plan.load(tmp_path / "k1" / plan.PLAN) == kplan
    (tmp_path / "bad.json").write_text('{"format": 1}')
    with pytest.raises(InputError, match="not a coverage plan"):
        plan.load(tmp_path / "bad.json")


def test_executed_reads_the_addresses_of_an_in_asm_log() -> None:
    seen = report.executed(DATA / "in_asm.log")
    assert 0xc012ac80 in seen and 0xc012acac in seen and 0xc012abc0 in seen
    assert 0xc012aca0 not in seen and 0xc012acc3 not in seen


def test_union_over_vms_and_kernels_of_a_series(tmp_path: Path) -> None:
    one = _kernel_dir(tmp_path / "cell1", _plan(), {"vm-boot1.boot.log": _text("in_asm.log")})
    runs = report.load_runs([one])
    [series] = report.by_series(runs)
    f = series.files[RCFS]
    assert f.executable == DIPUT_LINES and f.uncovered == [986, 988]
    assert runs[0].boot_traced
    # another kernel of the series (another config) ran put_nsproxy: the union covers it all
    two = _kernel_dir(tmp_path / "cell2", _plan(key="k2", label="rcfs-fixes/debug"),
                      {"vm-boot2.log": "----------------\nIN: \n0xc012aca3:  ff 08    decl (%eax)\n"})
    [series] = report.by_series(report.load_runs([one, two]))
    assert series.files[RCFS].uncovered == [986]
    data = report.to_json([series])
    assert data["files"][RCFS] == {"added_lines": 1241, "added_executable": 7, "covered": 6,
                                   "percent": 85.7, "uncovered": [986]}
    assert data["total"] == {"added_executable": 7, "covered": 6, "percent": 85.7}
    assert [(k["label"], k["vms"], k["boot_traced"]) for k in data["kernels"]] == [
        ("rcfs-fixes/default", 1, True), ("rcfs-fixes/debug", 1, False)]


def test_two_series_are_kept_apart(tmp_path: Path) -> None:
    fixes = _kernel_dir(tmp_path / "a", _plan(), {"vm.boot.log": _text("in_asm.log")})
    posted = _kernel_dir(tmp_path / "b", _plan(key="k3", label="rcfs-testss/default", series="rcfs-testss"),
                         {})
    coverage = report.by_series(report.load_runs([fixes, posted]))
    data = report.to_json(coverage)
    assert set(data["files"]) == {f"rcfs-fixes:{RCFS}", f"rcfs-testss:{RCFS}"}
    assert data["files"][f"rcfs-testss:{RCFS}"]["covered"] == 0
    assert data["total"] == {"added_executable": 14, "covered": 5, "percent": 35.7}
    assert report.headline(coverage).splitlines() == [
        "rcfs-fixes: kernel/rcfs.c 5/7 (71.4%); total 5/7 (71.4%)",
        "rcfs-testss: kernel/rcfs.c 0/7 (0.0%); total 0/7 (0.0%)"]


def test_two_versions_of_a_series_are_kept_apart(tmp_path: Path) -> None:
    old = _kernel_dir(tmp_path / "a", _plan(), {"vm.boot.log": _text("in_asm.log")})
    new = _kernel_dir(tmp_path / "b", _plan(key="k4", source="fedcba9876543210"), {})
    coverage = report.by_series(report.load_runs([old, new]))
    assert [s.series for s in coverage] == ["rcfs-fixes@01234567", "rcfs-fixes@fedcba98"]
    assert [len(s.files[RCFS].covered) for s in coverage] == [5, 0]


def test_write_makes_json_and_an_escaped_page(tmp_path: Path) -> None:
    cell = _kernel_dir(tmp_path / "cell", _plan(), {"vm.boot.log": _text("in_asm.log")})
    report.write(tmp_path / "out", [cell])
    assert json.loads((tmp_path / "out" / report.COVERAGE_JSON).read_text())["total"]["covered"] == 5
    html = (tmp_path / "out" / report.COVERAGE_HTML).read_text()
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    anchor = page._anchor("rcfs-fixes", RCFS)
    assert f'<tr class="unc" id="{anchor}-986">' in html and f'<tr class="cov" id="{anchor}-983">' in html
    assert f'<a href="#{anchor}-988">988</a>' in html  # the uncovered list links to the line
    assert '<tr class="add"><td class="n">984</td>' in html  # added, no code


# --- tracing the VMs ------------------------------------------------------------------------


def _prepared(key: str) -> Any:
    return SimpleNamespace(build=SimpleNamespace(key=key), spec=SimpleNamespace(label="x"))


def test_first_vm_of_a_kernel_boots_later_ones_resume(tmp_path: Path) -> None:
    _kernel_dir(tmp_path, _plan(key="k9"), {})
    first = plan.vm_trace(_prepared("k9"), tmp_path, "rcfs-fixes/default[A=1,B=2]-boot1", resumes=True)
    assert first is not None and first.boots and first.ranges == ((0xc012ac80, 0xc012accd),)
    assert first.log == tmp_path.absolute() / "k9" / "rcfs-fixes-default-A-1-B-2--boot1.boot.log"
    second = plan.vm_trace(_prepared("k9"), tmp_path, "v-boot2", resumes=True)
    assert second is not None and not second.boots and second.log.name == "v-boot2.log"
    fresh = plan.vm_trace(_prepared("k9"), tmp_path, "v-boot2", resumes=False)  # --kernel-fresh-boot
    assert fresh is not None and fresh.boots and fresh.log.name == "v-boot2.boot.log"
    again = plan.vm_trace(_prepared("k9"), tmp_path, "v-boot2", resumes=True)  # a later session
    assert again is not None and again.log.name == "v-boot2-2.log"


def test_a_kernel_without_the_patch_code_is_not_traced(tmp_path: Path) -> None:
    empty = KernelPlan(key="k0", label="rcfs-fixes/norcfs", series="rcfs-fixes", source="s", ranges=(),
                       functions=(), files={})
    _kernel_dir(tmp_path, empty, {})
    assert plan.vm_trace(_prepared("k0"), tmp_path, "vm", resumes=True) is None


def test_vm_config_boots_the_traced_first_vm_and_resumes_the_next(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    saved = SimpleNamespace(state=tmp_path / "state")
    ensured: list[str] = []

    def ensure(cfg: VMConfig, name: str) -> Any:
        ensured.append(name)
        return saved

    monkeypatch.setattr(snapshot, "ensure", ensure)
    traces = iter([plan.VMTrace(tmp_path / "a.boot.log", ((1, 2),), True),
                   plan.VMTrace(tmp_path / "b.log", ((1, 2),), False)])
    monkeypatch.setattr(plan, "vm_trace", lambda prepared, d, name, resumes: next(traces))
    prepared: Any = SimpleNamespace(spec=KernelSpec(), build=SimpleNamespace(bzimage=tmp_path / "bz"),
                                    image=SimpleNamespace(initramfs=tmp_path / "rd", client_keys={},
                                                          host_public_key=None, ssh_port=22))
    first = target.vm_config(prepared, BootOptions(coverage=tmp_path), "vm1")
    assert first.incoming is None and first.trace_log == tmp_path / "a.boot.log" and ensured == []
    second = target.vm_config(prepared, BootOptions(coverage=tmp_path), "vm2")
    assert second.incoming == saved.state and second.trace_log == tmp_path / "b.log"
    assert second.trace_ranges == ((1, 2),) and ensured == ["vm2"]


def test_qemu_logs_every_range(tmp_path: Path) -> None:
    cfg = VMConfig(kernel=tmp_path / "bzImage", initramfs=None, trace_log=tmp_path / "t.log",
                   trace_ranges=((0xc0124a70, 0xc0124c98), (0xc012ab40, 0xc012c31c)))
    argv = qemu_argv(cfg, 2222)
    i = argv.index("-dfilter")
    assert argv[i - 2:i + 4] == ["-d", "in_asm", "-dfilter", "0xc0124a70..0xc0124c97,0xc012ab40..0xc012c31b",
                                 "-D", str(tmp_path / "t.log")]
    assert "-dfilter" not in qemu_argv(VMConfig(kernel=tmp_path / "bzImage", initramfs=None,
                                                trace_log=tmp_path / "t.log"), 2222)
    smp = VMConfig(kernel=tmp_path / "bzImage", initramfs=None, cpus=2)
    assert "tcg,thread=multi" in qemu_argv(smp, 2222)
    traced = dataclasses.replace(smp, trace_log=tmp_path / "t.log", trace_ranges=((1, 2),))
    assert "tcg,thread=single" in qemu_argv(traced, 2222)  # QEMU 7.2 hangs booting MTTCG with in_asm


def test_each_cell_traces_into_its_own_folder(tmp_path: Path) -> None:
    cell = matrix.Cell("default", "rcfs-fixes")
    argv = matrix.pytest_argv(cell, tmp_path, tmp_path, [], coverage=True)
    assert f"--kernel-coverage={tmp_path / matrix.COVERAGE_DIR}" in argv
    plain = matrix.pytest_argv(cell, tmp_path, tmp_path, [])
    assert not any(a.startswith("--kernel-coverage") for a in plain)


# --- the build flavour ----------------------------------------------------------------------


def test_flavour_adds_debug_info_and_keeps_what_debug_kernel_would_turn_on_off() -> None:
    assert flavour.debug_info_overrides({"CONFIG_RCFS": "y"}) == [
        "CONFIG_DEBUG_KERNEL=y", "CONFIG_DEBUG_INFO=y", "CONFIG_DETECT_SOFTLOCKUP=n",
        "CONFIG_DEBUG_BUGVERBOSE=n", "CONFIG_FORCED_INLINING=n"]
    # a debug config keeps its own choices; only DEBUG_INFO is added
    assert flavour.debug_info_overrides({"CONFIG_DEBUG_KERNEL": "y", "CONFIG_DETECT_SOFTLOCKUP": "y"}) == [
        "CONFIG_DEBUG_INFO=y"]
    assert "CONFIG_DETECT_SOFTLOCKUP=n" not in flavour.debug_info_overrides({"CONFIG_DETECT_SOFTLOCKUP": "y"})
