from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness import results as report
from harness.errors import GuestCrash, InfraError, InputError
from harness.results import (
    BootRecord,
    BuildRecord,
    ResultsDir,
    StageRecord,
    Summary,
    TestRecord,
    junit,
    resultsdir,
)
from tests.report_sample import DATA, _build, _results

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def records(junit_file: Path) -> dict[str, TestRecord]:
    return {r.path: r for r in report.parse_junit(junit_file, "harness:rcfs/default")}




# --------------------------------------------------------------------------- JUnit parsing


def test_junit_statuses_from_real_pytest_run(records: dict[str, TestRecord]) -> None:
    got = {path: (r.status, r.xfail, r.label) for path, r in records.items()}
    assert got == {
        "test_guest.py::test_mount_rcfs": ("PASS", None, "PASS"),
        "test_guest.py::test_create_class": ("FAIL", None, "FAIL"),
        "test_guest.py::test_needs_guest": ("ERROR", None, "ERROR"),  # fixture error: infrastructure
        "test_guest.py::test_ssh_drop": ("ERROR", None, "ERROR"),  # InfraError is never a verdict
        "test_guest.py::test_numtasks": ("SKIP", None, "SKIP"),
        "test_guest.py::test_shares": ("SKIP", "xfail", "XFAIL"),
        "test_guest.py::test_fixed_strict": ("FAIL", "xpass", "XPASS"),
        "test_guest.py::TestHierarchy::test_depth[1]": ("PASS", None, "PASS"),
        "test_guest.py::TestHierarchy::test_depth[2]": ("PASS", None, "PASS"),
    }
    for r in records.values():
        assert r.build_id == "harness:rcfs/default"
        assert r.id == f"harness:rcfs/default:{r.path}"
        assert r.duration is not None and r.duration >= 0


def test_junit_messages_and_excerpts(records: dict[str, TestRecord]) -> None:
    fail = records["test_guest.py::test_create_class"]
    assert fail.message is not None and "class <script>alert('x')</script> not created" in fail.message
    assert fail.details is not None and "assert (1 + 1) == 3" in fail.details
    # stdout is the console excerpt: 3000 lines, truncated keeping head and tail
    assert fail.console_excerpt is not None
    assert len(fail.console_excerpt) <= report.MAX_EXCERPT + 100
    assert "guest console line 0\n" in fail.console_excerpt
    assert fail.console_excerpt.rstrip().endswith("last console line")
    assert "characters cut ..." in fail.console_excerpt
    assert "Captured" not in fail.console_excerpt  # pytest's section headers are dropped
    # stderr is the kernel log excerpt
    assert fail.kernel_log_excerpt is not None
    assert fail.kernel_log_excerpt.startswith("BUG: unable to handle kernel NULL pointer")

    error = records["test_guest.py::test_needs_guest"]
    assert error.message is not None and "ssh to guest <vm0> dropped & not back" in error.message
    assert error.console_excerpt is None and error.kernel_log_excerpt is None
    infra = records["test_guest.py::test_ssh_drop"]
    assert infra.message is not None and "SSH connection lost" in infra.message
    assert records["test_guest.py::test_numtasks"].message == "numtasks controller not in this series"
    assert records["test_guest.py::test_shares"].message == "shares not enforced yet"
    assert records["test_guest.py::test_mount_rcfs"].console_excerpt == "[    1.204] rcfs: mounted on /rcfs"


def _case(props: dict[str, str], failure: str = "", name: str = "t") -> str:
    properties = "".join(f'<property name="{k}" value="{v}"/>' for k, v in props.items())
    return (f'<testcase classname="weird.name" name="{name}" time="1.5"><properties>{properties}</properties>'
            f"{failure}<system-out>ignored</system-out><system-err>kernel</system-err></testcase>")


def test_junit_properties_override_and_nodeid(tmp_path: Path) -> None:
    f = tmp_path / "j.xml"
    f.write_text('<testsuite name="pytest">' + _case(
        {"nodeid": "guest/test_a.py::t", "console_log": "from property", "error_kind": InfraError.kind},
        '<failure message="qemu died">E   ConnectionError</failure>') + "</testsuite>")
    (r,) = report.parse_junit(f, "b")
    assert (r.path, r.status, r.duration) == ("guest/test_a.py::t", "ERROR", 1.5)
    assert (r.console_excerpt, r.kernel_log_excerpt) == ("from property", "kernel")


def test_junit_error_is_told_apart_by_its_kind_never_by_its_text(tmp_path: Path) -> None:
    f = tmp_path / "j.xml"
    infra_text = ('<failure message="harness.errors.InfraError: qemu died">'
                  "E   harness.errors.InfraError</failure>")
    f.write_text('<testsuite name="pytest">'
                 + _case({"nodeid": "test_a.py::text_only"}, infra_text)
                 + _case({"nodeid": "test_a.py::crash", "error_kind": GuestCrash.kind}, infra_text)
                 + _case({"nodeid": "test_a.py::timeout", "error_kind": "timeout"},
                         '<failure message="assert 1 == 2">E   assert</failure>')
                 + "</testsuite>")
    got = {r.path.rsplit("::", 1)[1]: r.status for r in report.parse_junit(f, "b")}
    # the text says InfraError, but no kind was recorded: a verdict; a guest crash is a verdict too
    assert got == {"text_only": "FAIL", "crash": "FAIL", "timeout": "ERROR"}


def test_junit_tests_go_to_the_kernel_they_ran_on(tmp_path: Path) -> None:
    f = tmp_path / "j.xml"
    f.write_text('<testsuite name="pytest">' + _case({"nodeid": "test_a.py::t1"}, name="t1")
                 + _case({"nodeid": "test_a.py::t2"}, name="t2") + "</testsuite>")
    records = report.parse_junit(f, "harness:cell", kernels={"test_a.py::t2": "harness:other"})
    assert [(r.path, r.build_id, r.id) for r in records] == [
        ("test_a.py::t1", "harness:cell", "harness:cell:test_a.py::t1"),
        ("test_a.py::t2", "harness:other", "harness:other:test_a.py::t2")]


def test_junit_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<testsuite><testcase")
    with pytest.raises(InputError, match="not a JUnit XML file"):
        report.parse_junit(tmp_path / "bad.xml", "b")
    with pytest.raises(InputError, match="cannot read"):
        report.parse_junit(tmp_path / "missing.xml", "b")


def test_truncate_keeps_head_and_tail() -> None:
    text = "".join(f"line {i}\n" for i in range(10_000))
    cut = report.truncate(text, 1000)
    assert len(cut) <= 1100
    assert cut.startswith("line 0\n") and cut.endswith("line 9999\n")
    assert "characters cut" in cut
    assert report.truncate("short", 1000) == "short"


def test_clean_captured() -> None:
    sep = "-" * 20
    text = f"{sep} Captured Log {sep}\n\n{sep} Captured Out {sep}\nhello\n\n"
    assert report.clean_captured(text) == "hello"
    both = f"{sep} Captured Log {sep}\nlogged\n{sep} Captured Out {sep}\nhello\n"
    assert report.clean_captured(both) == "--- Captured Log ---\nlogged\n--- Captured Out ---\nhello"


@pytest.mark.parametrize("nodeid", [
    "test_a.py::test_x",
    "guest/rcfs/test_mount.py::TestMount::test_twice[ro]",
])
def test_nodeid_survives_junit_names(nodeid: str) -> None:
    assert junit.nodeid_of(*junit.junit_name(nodeid)) == nodeid


# --------------------------------------------------------------------------- summary, layout


def test_results_dir_layout(tmp_path: Path, junit_file: Path) -> None:
    rd = _results(tmp_path, junit_file)
    names = sorted(p.relative_to(rd.path).as_posix() for p in rd.path.rglob("*") if p.is_file())
    assert names == [
        "index.html", "junit.xml",
        "logs/rcfs_debug/build.log", "logs/rcfs_debug/console.log",
        "logs/rcfs_default/build.log", "logs/rcfs_default/console.log",
        "summary.json",
    ]
    build = rd.summary.builds[0]
    assert build.kernel == "rcfs/default" and build.id == "harness:rcfs/default"
    assert build.log_path == "logs/rcfs_default/build.log"
    assert (rd.path / build.log_path).read_text() == (DATA / "build.log").read_text()
    assert rd.summary.boots[0].console_log_path == "logs/rcfs_default/console.log"


def test_log_inside_results_dir_is_not_copied(tmp_path: Path) -> None:
    rd = ResultsDir(tmp_path / "r")
    console = rd.path / "vm" / "console.log"
    console.parent.mkdir()
    console.write_text("boot\n")
    boot = rd.add_boot(BootRecord(id="x:boot", build_id="x", status="PASS", console_log_path=str(console)))
    assert boot.console_log_path == "vm/console.log"
    assert not (rd.path / "logs").exists()


def test_create_makes_timestamped_directories(tmp_path: Path) -> None:
    import datetime

    now = datetime.datetime(2024, 5, 1, 12, 30, 0)
    a = ResultsDir.create(tmp_path, now=now)
    b = ResultsDir.create(tmp_path, now=now)
    assert (a.path.name, b.path.name) == ("20240501-123000", "20240501-123000-2")


def test_summary_round_trip(tmp_path: Path, junit_file: Path) -> None:
    rd = _results(tmp_path, junit_file)
    data = json.loads((rd.path / "summary.json").read_text())
    assert data["version"] == {"major": 1, "minor": 1}
    assert data["interrupted"] is None
    assert data["origin"] == "harness"
    assert {"checkouts", "builds", "boots", "tests"} <= data.keys()
    loaded = report.load_summary(rd.path)
    assert loaded == rd.summary
    assert loaded.checkouts[0].patchset_hash == rd.summary.checkouts[0].patchset_hash != ""
    # a newer minor version with unknown keys still loads
    data["version"]["minor"] = 7
    data["tests"][0]["new_field"] = 1
    data["future"] = {}
    assert Summary.from_dict(data) == loaded


def test_summary_refuses_other_major_version_and_bad_status(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="schema version"):
        Summary.from_dict({"version": {"major": 2, "minor": 0}})
    with pytest.raises(InputError, match="unknown status 'MAYBE'"):
        Summary.from_dict({"version": {"major": 1, "minor": 0},
                           "builds": [{"id": "b", "series": "s", "config": "c", "status": "MAYBE"}]})
    (tmp_path / "summary.json").write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        report.load_summary(tmp_path)


def test_write_is_atomic(tmp_path: Path, junit_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = _results(tmp_path, junit_file)
    before = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    rd.add_test(TestRecord(id="x", build_id="harness:rcfs/default", path="test_new.py::t", status="PASS"))

    def boom(summary: Summary) -> str:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(resultsdir, "render_html", boom)
    with pytest.raises(RuntimeError):
        rd.write()
    after = {p.name: p.read_bytes() for p in rd.path.iterdir() if p.is_file()}
    assert set(after) == set(before)  # no temporary file left behind
    assert after["summary.json"] == before["summary.json"] and after["index.html"] == before["index.html"]


def test_duplicate_test_keeps_worst_status(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rd = ResultsDir(tmp_path / "r")
    rd.add_test(TestRecord(id="b:t", build_id="b", path="t", status="FAIL", message="first"))
    with caplog.at_level(logging.WARNING, logger="harness.results"):
        rd.add_test(TestRecord(id="b:t", build_id="b", path="t", status="PASS"))
    assert [(t.status, t.message) for t in rd.summary.tests] == [("FAIL", "first")]
    assert "ran twice" in caplog.text


# --------------------------------------------------------------------------- JUnit output


def test_merged_junit_has_one_suite_per_kernel(tmp_path: Path, junit_file: Path) -> None:
    rd = _results(tmp_path, junit_file)
    root = ET.parse(rd.path / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == ["rcfs/default", "rcfs/debug"]
    default = suites["rcfs/default"]
    # 9 tests + build + boot
    assert (default.get("tests"), default.get("failures"), default.get("errors"), default.get("skipped")) == (
        "11", "2", "2", "2")
    debug = suites["rcfs/debug"]
    assert (debug.get("tests"), debug.get("failures")) == ("2", "1")  # the boot that panicked
    assert root.get("tests") == "13"
    # the merged file is itself pytest-style JUnit: the report parses it back
    back = {r.path: r for r in report.parse_junit(rd.path / "junit.xml", "again")}
    original = {t.path: t for t in rd.summary.tests}
    for path, t in original.items():
        assert (back[path].status, back[path].xfail, back[path].console_excerpt) == (
            t.status, t.xfail, t.console_excerpt)


# --------------------------------------------------------------------------- merge


def test_merge_two_shards(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def shard(name: str, status: report.Status, other_log: str) -> Path:
        rd = ResultsDir(tmp_path / name)
        build = rd.add_build(_build())
        log = tmp_path / f"{name}-console.log"
        log.write_text(other_log)
        rd.add_boot(BootRecord(id=f"{build.id}:boot:{name}", build_id=build.id, status="PASS",
                               console_log_path=str(log)))
        rd.add_test(TestRecord(id=f"{build.id}:a", build_id=build.id, path=f"test_{name}.py::t",
                               status="PASS"))
        rd.add_test(TestRecord(id=f"{build.id}:shared", build_id=build.id, path="test_shared.py::t",
                               status=status, message=f"from {name}"))
        rd.write()
        return rd.path

    a = shard("a", "PASS", "console of shard a\n")
    b = shard("b", "FAIL", "console of shard b\n")
    with caplog.at_level(logging.WARNING, logger="harness.results"):
        merged = report.merge([a, b], tmp_path / "out")
    assert "test_shared.py::t ran twice on harness:rcfs/default (PASS, FAIL): keeping FAIL" in caplog.text
    assert len(merged.builds) == 1 and len(merged.boots) == 2
    assert sorted((t.path, t.status) for t in merged.tests) == [
        ("test_a.py::t", "PASS"), ("test_b.py::t", "PASS"), ("test_shared.py::t", "FAIL")]
    assert next(t for t in merged.tests if t.path == "test_shared.py::t").message == "from b"
    out = tmp_path / "out"
    assert report.load_summary(out) == merged
    assert (out / "index.html").is_file() and (out / "junit.xml").is_file()
    # both shards had logs/rcfs_default/console.log with different contents: both kept
    consoles = sorted(b.console_log_path or "" for b in merged.boots)
    assert consoles == ["logs/rcfs_default/console-2.log", "logs/rcfs_default/console.log"]
    assert {(out / c).read_text() for c in consoles} == {"console of shard a\n", "console of shard b\n"}
    # the identical build.log is copied once
    assert [p.name for p in (out / "logs" / "rcfs_default").iterdir() if "build" in p.name] == ["build.log"]
    assert report.exit_code(merged) == 1
    # merging again replaces the previous output
    report.merge([a], out)
    assert len(report.load_summary(out).tests) == 2


def test_merge_keeps_the_worse_boot_and_stage_and_the_first_on_a_tie(tmp_path: Path) -> None:
    def shard(name: str, boot: report.Status, stage: report.Status) -> Path:
        rd = ResultsDir(tmp_path / name)
        build = rd.add_build(_build())
        rd.add_boot(BootRecord(id=f"{build.id}:boot1", build_id=build.id, status=boot, message=name))
        rd.add_stage(StageRecord(id=f"{build.id}:image", build_id=build.id, stage="image", status=stage,
                                 message=name))
        rd.write()
        return rd.path

    # boots: FAIL, then a better PASS (ignored), then a worse ERROR; stages: a tie, then a better FAIL
    merged = report.merge([shard("a", "FAIL", "ERROR"), shard("b", "PASS", "ERROR"),
                           shard("c", "ERROR", "FAIL")], tmp_path / "out")
    assert [(x.status, x.message) for x in merged.boots] == [("ERROR", "c")]
    assert [(x.status, x.message) for x in merged.stages] == [("ERROR", "a")]


def test_merge_refuses_bad_output_and_input(tmp_path: Path) -> None:
    rd = ResultsDir(tmp_path / "a")
    rd.write()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("x")
    with pytest.raises(InputError, match="not a results directory"):
        report.merge([rd.path], tmp_path / "busy")
    with pytest.raises(InputError, match="cannot also be an input"):
        report.merge([rd.path], rd.path)
    with pytest.raises(InputError, match="cannot read results summary"):
        report.merge([tmp_path / "busy"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- exit codes


def _summary(tests: list[report.Status], build: report.Status = "PASS", boot: report.Status = "PASS",
             xfail: report.XFail | None = None) -> Summary:
    return Summary(
        builds=[BuildRecord.new("s", "c", build)],
        boots=[BootRecord(id="b", build_id="harness:s/c", status=boot)],
        tests=[TestRecord(id=str(i), build_id="harness:s/c", path=f"t{i}", status=s, xfail=xfail)
               for i, s in enumerate(tests)],
    )


@pytest.mark.parametrize(("summary", "code"), [
    (_summary([]), 0),
    (_summary(["PASS", "PASS"]), 0),
    (_summary(["PASS", "SKIP"]), 0),
    (_summary(["SKIP"], xfail="xfail"), 0),
    (_summary(["PASS", "FAIL", "SKIP"]), 1),
    (_summary(["FAIL"], xfail="xpass"), 1),
    (_summary(["PASS", "FAIL", "ERROR"]), 2),
    (_summary(["PASS"], build="FAIL"), 2),
    (_summary(["PASS"], boot="ERROR"), 2),
    (_summary(["FAIL"], boot="FAIL"), 2),
    (_summary(["PASS", "MISS"]), 2),
    (_summary(["PASS"], build="MISS"), 2),
], ids=["empty", "pass", "skip", "xfail", "fail", "xpass-strict", "error", "build-fail", "boot-error",
        "boot-fail-wins", "test-not-run", "build-not-run"])
def test_exit_code(summary: Summary, code: int) -> None:
    assert report.exit_code(summary) == code


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_exit_code_of_an_interrupted_run(name: str, code: int) -> None:
    summary = _summary(["PASS", "FAIL"])
    summary.interrupted = name
    assert report.exit_code(summary) == code


def test_exit_code_of_real_run(tmp_path: Path, junit_file: Path) -> None:
    assert report.exit_code(_results(tmp_path, junit_file).summary) == 2


# --------------------------------------------------------------------------- HTML


class _Page(HTMLParser):
    """Collects cells (class, text, link) of the matrix and the ids on the page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.external: list[str] = []
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if key in a and ("//" in a[key] or a[key].startswith("http")):
                self.external.append(a[key])
        if tag in ("link", "img", "iframe"):
            self.external.append(tag)
        if tag == "td" and "cell" in a.get("class", ""):
            self._cell = {"class": a["class"], "text": "", "href": ""}
            self.cells.append(self._cell)
        if tag == "a" and self._cell is not None and not self._cell["href"]:
            self._cell["href"] = a.get("href", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def test_html_matrix_cells_and_links(tmp_path: Path, junit_file: Path) -> None:
    rd = _results(tmp_path, junit_file)
    html = (rd.path / "index.html").read_text()
    page = _Page()
    page.feed(html)
    assert "matrix" in page.ids and "failures" in page.ids
    # 2 stage rows + 9 test rows, 2 kernels each
    assert len(page.cells) == 22
    by_label: dict[str, set[str]] = {}
    for c in page.cells:
        by_label.setdefault(c["text"].split()[0], set()).add(c["class"])
    assert by_label["PASS"] == {"cell st-pass"}
    assert by_label["FAIL"] == {"cell st-fail"}
    assert by_label["ERROR"] == {"cell st-error"}
    assert by_label["SKIP"] == {"cell st-skip"}
    assert by_label["XFAIL"] == {"cell st-xfail"}
    assert by_label["XPASS"] == {"cell st-fail"}  # strict xpass fails
    assert by_label["—"] == {"cell st-none"}  # tests not run on the kernel that did not boot
    # every FAIL/ERROR cell links to a details section on the page
    bad = [c for c in page.cells if c["class"] in ("cell st-fail", "cell st-error")]
    assert len(bad) == 5  # 2 FAIL + 2 ERROR tests, 1 failed boot
    for c in bad:
        assert c["href"].startswith("#") and c["href"][1:] in page.ids
    # build and boot rows: durations and relative log links
    assert 'href="logs/rcfs_default/build.log"' in html
    assert 'href="logs/rcfs_debug/console.log"' in html
    assert "5 min 12 s" in html and "1 warning" in html
    assert page.external == []
    assert "exit code 2" in html


def test_html_failure_details_are_escaped(tmp_path: Path, junit_file: Path) -> None:
    rd = _results(tmp_path, junit_file)
    html = (rd.path / "index.html").read_text()
    assert "<script>alert" not in html and "<script>kernel" not in html
    assert html.count("<script>") == 1  # the page's own
    assert "class &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; not created" in html
    assert "&lt;script&gt;alert(&#39;console&#39;)&lt;/script&gt; last console line" in html
    assert "EIP: [&lt;c01234&gt;] rcfs_create+0x1c/0x40" in html
    assert "ssh to guest &lt;vm0&gt; dropped &amp; not back" in html
    assert "No init found &lt;init&gt;" in html
    assert '<details class="console"><summary>Guest console excerpt' in html
    assert '<details class="kernel-log"><summary>Kernel log excerpt' in html


def test_html_without_anything(tmp_path: Path) -> None:
    html = report.render_html(Summary())
    assert "No test results." in html and "exit code 0" in html


# --------------------------------------------------------------------------- stages, not run, interrupted


def _stage_failed(tmp_path: Path) -> ResultsDir:
    """One kernel built, its image stage failed, its three tests not run; another kernel never started."""
    rd = ResultsDir(tmp_path / "stage")
    good = rd.add_build(_build(kernel="rcfs/default[RCFS_TESTSS=y]", overrides=["CONFIG_RCFS_TESTSS=y"]))
    log = tmp_path / "image.log"
    log.write_text("busybox: make failed\n")
    rd.add_stage(StageRecord(id=f"{good.id}:image", build_id=good.id, stage="image", status="ERROR",
                             message="busybox: make failed (exit 2) <b>", kind="stage", log_path=str(log)))
    said: list[report.Status] = ["ERROR", "SKIP", "SKIP"]
    for n, status in enumerate(said):  # what pytest said: the first met the error
        rd.add_test(TestRecord(id=f"{good.id}:t{n}", build_id=good.id, path=f"test_x.py::t{n}",
                               status=status, not_run="the image stage failed"))
    rd.add_build(BuildRecord.new("rcfs", "debug", "MISS", message="not run: interrupted by SIGTERM"))
    rd.summary.interrupted = "SIGTERM"
    rd.write()
    return rd


def test_a_failed_stage_and_tests_not_run(tmp_path: Path) -> None:
    rd = _stage_failed(tmp_path)
    s = rd.summary
    assert [t.status for t in s.tests] == ["MISS"] * 3
    assert s.stages[0].log_path == "logs/rcfs_default_RCFS_TESTSS_y/image.log"
    counts = s.counts()
    assert (counts["MISS"], counts["ERROR"]) == (3, 0)
    assert (counts["stages_failed"], counts["builds_not_run"]) == (1, 1)
    assert report.load_summary(rd.path) == s
    suites = {x.get("name"): x for x in ET.parse(rd.path / "junit.xml").getroot().iter("testsuite")}
    kernel = suites["rcfs/default[RCFS_TESTSS=y]"]
    assert (kernel.get("tests"), kernel.get("errors"), kernel.get("skipped")) == ("5", "1", "3")
    (error,) = [c for c in kernel.iter("testcase") if c.find("error") is not None]
    assert (error.get("classname"), error.get("name")) == ("harness", "image")
    skipped = [c.find("skipped") for c in kernel.iter("testcase") if c.find("skipped") is not None]
    assert {(x.get("type"), x.get("message")) for x in skipped if x is not None} == {
        ("harness.not_run", "not run: the image stage failed")}
    # the rendered JUnit reads back as the same tests
    again = ResultsDir(tmp_path / "again")
    again.add_tests_from_junit(rd.path / "junit.xml", "x")
    assert sorted((t.path, t.status, t.not_run) for t in again.summary.tests if "test_x" in t.path) == [
        (f"test_x.py::t{n}", "MISS", "the image stage failed") for n in range(3)]


def test_html_shows_the_stage_the_tests_not_run_and_the_interrupt(tmp_path: Path) -> None:
    rd = _stage_failed(tmp_path)
    html_text = (rd.path / "index.html").read_text()
    page = _Page()
    page.feed(html_text)
    assert "row-stage-image" in page.ids and "interrupted" in page.ids
    assert "Interrupted by SIGTERM" in html_text and "kernels never started: rcfs/debug" in html_text
    assert "exit code 143" in html_text
    texts = [c["text"].strip() for c in page.cells]
    assert texts.count("NOT RUN") == 4  # three tests and the kernel never built
    image_cell = next(c for c in page.cells if c["text"].startswith("ERROR"))
    assert image_cell["href"][1:] in page.ids  # the stage's failure section
    assert "busybox: make failed (exit 2) &lt;b&gt;" in html_text
    assert "3 not run" in html_text and "1 stage failed" in html_text


def test_merge_keeps_the_interrupt_and_a_build_that_ran_elsewhere(tmp_path: Path) -> None:
    a = _stage_failed(tmp_path)
    b = ResultsDir(tmp_path / "b")
    b.add_build(BuildRecord.new("rcfs", "debug", "PASS"))
    b.write()
    merged = report.merge([a.path, b.path], tmp_path / "out")
    assert merged.interrupted == "SIGTERM"
    assert {x.kernel: x.status for x in merged.builds} == {
        "rcfs/default[RCFS_TESTSS=y]": "PASS", "rcfs/debug": "PASS"}
    assert [(x.stage, x.log_path) for x in merged.stages] == [
        ("image", "logs/rcfs_default_RCFS_TESTSS_y/image.log")]
    assert (tmp_path / "out" / "logs" / "rcfs_default_RCFS_TESTSS_y" / "image.log").is_file()


def test_summary_refuses_an_unknown_signal() -> None:
    with pytest.raises(InputError, match="signal name"):
        Summary.from_dict({"version": {"major": 1, "minor": 1}, "interrupted": "SIGWHATEVER"})
