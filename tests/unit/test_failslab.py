"""The pure parts of the fault-injection fixture: kallsyms, struct layout, rcfs-probe -F, call chains."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.plugin.guest import parse_probe
from harness.suites.rcfs.failslab import (
    FIELDS,
    FaultSetupError,
    Injection,
    check_layout,
    data_address,
    function_range,
    injected_chains,
    parse_injection,
    parse_kallsyms,
    site,
)
from harness.suites.rcfs.test_faults_alloc import LEAK_REPS, largest_changes, leak_problems
from harness.suites.rcfs.test_leaks import NOISE, Counters

KALLSYMS = """\
c0100000 T _text
c0134d40 t rcfs_mkdir
c0134ef0 T rc_register_subsys
c0134a50 t rcfs_populate_dir.isra.0
c0135000 t cmppid
c0135000 t cmppid
c02fe8e0 d failslab
c0300000 D init_nsproxy
c0134e00 d some_data_between
c0400000 t last_function
garbage line
"""


def test_function_range_ends_at_the_next_text_symbol() -> None:
    symbols = parse_kallsyms(KALLSYMS)
    rng = function_range(symbols, "rcfs_mkdir")
    # a data symbol at a higher address inside the range does not end it
    assert (rng.function, rng.start, rng.end) == ("rcfs_mkdir", 0xc0134d40, 0xc0134ef0)


def test_function_range_of_a_name_with_a_suffix_and_of_the_last_function() -> None:
    symbols = parse_kallsyms(KALLSYMS)
    assert function_range(symbols, "rcfs_populate_dir.isra.0").end == 0xc0134d40
    with pytest.raises(FaultSetupError, match="no text symbol after it"):
        function_range(symbols, "last_function")


@pytest.mark.parametrize("name", ["attach_task", "cmppid", "failslab"])
def test_function_range_refuses_missing_duplicate_and_data_symbols(name: str) -> None:
    with pytest.raises(FaultSetupError, match=name):
        function_range(parse_kallsyms(KALLSYMS), name)


def test_data_address() -> None:
    symbols = parse_kallsyms(KALLSYMS)
    assert data_address(symbols, "failslab") == 0xc02fe8e0
    assert data_address(symbols, "init_nsproxy") == 0xc0300000
    with pytest.raises(FaultSetupError):
        data_address(symbols, "rcfs_mkdir")


def _words(**values: int) -> list[int]:
    return [values.get(f, 0) for f in FIELDS]


def test_check_layout_accepts_what_was_written_and_names_a_mismatch() -> None:
    expect = {"probability": 100, "times": 0, "task_filter": 1, "require_start": 0xc0134d40,
              "require_end": 0xc0134ef0}
    check_layout(_words(**expect, count=12345), expect)
    with pytest.raises(FaultSetupError, match="require_end"):
        check_layout(_words(**{**expect, "require_end": 7}), expect)
    with pytest.raises(FaultSetupError):
        check_layout(_words(**expect)[:3], expect)  # too few words read


def test_parse_injection() -> None:
    result = parse_probe("fault: OK 3 1 40\nmkdir: ENOMEM\n", 1)
    assert parse_injection(result) == Injection(3, True, 40)
    assert result.errno == "ENOMEM"
    assert parse_injection(parse_probe("fault: OK 41 0 40\nmkdir: OK\n", 0)) == Injection(41, False, 40)


@pytest.mark.parametrize("output", ["mkdir: OK\n", "fault: ENOENT\n", "fault: OK 3 2 40\n",
                                    "fault: OK 3 1\n"])
def test_parse_injection_refuses_a_missing_failed_or_malformed_report(output: str) -> None:
    with pytest.raises(FaultSetupError):
        parse_injection(parse_probe(output, 1))


CONSOLE = """\
rcfs_create: ns = c1234
FAULT_INJECTION: forcing a failure
 [<c0103505>] dump_stack+0x25/0x40
 [<c019c9a3>] should_fail+0x1f3/0x200
 [<c014ef1c>] __kmalloc_track_caller+0xac/0x160
 [<c013f6f6>] kmemdup+0x16/0x40
 [<c0128803>] dup_namespaces+0x13/0x70
 [<c0134d75>] rcfs_mkdir+0x35/0x1b0
 [<c015c630>] vfs_mkdir+0x50/0xa0
 =======================
FAULT_INJECTION: forcing a failure
 [<c0103505>] dump_stack+0x25/0x40
 [<c019c9a3>] should_fail+0x1f3/0x200
 [<c014e24a>] kmem_cache_alloc+0x6a/0x100
 [<c0164ba0>] d_alloc+0x20/0x190
 [<c0159ee2>] __lookup_hash+0x92/0x100
 [<c015b779>] lookup_one_len+0x59/0x80
 [<c01349fb>] rcfs_add_file+0x2b/0x80
 [<c0134a74>] rcfs_populate_dir.isra.0+0x24/0x70
 [<c0134e8a>] rcfs_mkdir+0x14a/0x1b0
 =======================
"""


def test_injected_chains_leave_out_the_allocator() -> None:
    chains = injected_chains(CONSOLE)
    assert chains == [
        ["dup_namespaces", "rcfs_mkdir", "vfs_mkdir"],
        ["d_alloc", "__lookup_hash", "lookup_one_len", "rcfs_add_file", "rcfs_populate_dir.isra.0",
         "rcfs_mkdir"],
    ]
    assert site(chains[0], "rcfs_mkdir") == "dup_namespaces <- rcfs_mkdir"
    assert site(chains[1], "rcfs_mkdir") == \
        "d_alloc <- __lookup_hash <- lookup_one_len <- rcfs_add_file <- ... <- rcfs_mkdir"
    assert injected_chains("no injection here\n [<c0103505>] dump_stack+0x25/0x40\n") == []


def _counters(active: dict[str, int], callers: dict[tuple[str, str], int], top: int = 5) -> Counters:
    return Counters(active, Counter(callers), top)


def test_leak_problems_within_the_noise_is_clean() -> None:
    before = _counters({"size-128": 100}, {("size-128", "dup_namespaces"): 10})
    after = _counters({"size-128": 100 + NOISE}, {("size-128", "dup_namespaces"): 10 + LEAK_REPS // 2 - 1})
    assert leak_problems(before, after, 3) == []


def test_leak_problems_names_the_cache_the_function_and_the_top_reference() -> None:
    before = _counters({"size-128": 100}, {("size-128", "dup_namespaces"): 10})
    after = _counters({"size-128": 100 + 2 * LEAK_REPS + NOISE},
                      {("size-128", "dup_namespaces"): 10 + LEAK_REPS}, top=6)
    found = leak_problems(before, after, 3)
    assert len(found) == 2
    assert "size-128" in found[0] and f"+{LEAK_REPS} dup_namespaces" in found[0]
    assert "init_nsproxy.count went from 5 to 6" in found[1]


def test_largest_changes() -> None:
    before = _counters({"size-32": 10, "size-128": 100}, {("size-128", "dup_namespaces"): 10})
    after = _counters({"size-32": 4, "size-128": 103}, {("size-128", "dup_namespaces"): 12,
                                                       ("size-64", "kstrdup"): 1})
    assert largest_changes(before, after) == (
        "kmalloc cache size-32 -6; function size-128 dup_namespaces +2; init_nsproxy.count +0")
