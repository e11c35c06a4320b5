"""harness.run.bisect_run without a kernel: verdicts from real pytest runs, node checks, CLI validation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessTimeout, InputError, StageError, ToolMissing
from harness.kernel.build import BuildResult
from harness.kernel.patches import Patch, Series
from harness.results import parse_junit
from harness.run import bisect_run
from harness.run.bisect import BisectOutcome, Candidate, StepResult, Verdict

THROWAWAY = textwrap.dedent('''
    import pytest

    from harness.errors import InfraError


    @pytest.fixture
    def broken_fixture():
        raise RuntimeError("fixture could not be set up")


    def test_pass():
        assert 1 + 1 == 2


    def test_fail():
        print("guest said: rmdir: OK")
        assert "rmdir" == "EBUSY", "rmdir of a busy container succeeded"


    def test_error(broken_fixture):
        pass


    def test_infra():
        raise InfraError("the VM died")


    def test_skip():
        pytest.skip("cannot be tested here")


    @pytest.mark.xfail(reason="known bug", strict=True)
    def test_xfail():
        assert False


    @pytest.mark.xfail(reason="known bug", strict=True)
    def test_xpass_strict():
        pass


    @pytest.mark.parametrize("n", [1, 2])
    def test_param(n):
        assert n == 1
''')


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    directory = tmp_path / "suite"
    directory.mkdir()
    (directory / "test_throwaway.py").write_text(THROWAWAY)
    return directory


BZ = Path("/nonexistent/bzImage")  # never booted: these tests use no kernel fixture


def run(suite: Path, name: str) -> tuple[Verdict, str]:
    return bisect_run.run_test(BZ, f"test_throwaway.py::{name}", "rcfs-testss", "default",
                               timeout=120, cwd=suite)


@pytest.mark.parametrize(("name", "verdict"), [
    ("test_pass", Verdict.GOOD),
    ("test_fail", Verdict.BAD),
    ("test_error", Verdict.INFRA),
])
def test_verdict_of_a_real_pytest_run(suite: Path, name: str, verdict: Verdict) -> None:
    got, detail = run(suite, name)
    assert got is verdict, detail
    assert name in detail


def test_bad_detail_has_the_failure_message_and_output(suite: Path) -> None:
    verdict, detail = run(suite, "test_fail")
    assert verdict is Verdict.BAD
    assert "rmdir of a busy container succeeded" in detail
    assert "guest said: rmdir: OK" in detail  # the captured output (junit_logging=all)


def test_verdicts_of_every_outcome_from_one_junit_file(suite: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "test_throwaway.py", "-q",
                    "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_logging=all"],
                   cwd=suite, capture_output=True, check=False)
    records = {r.path.split("::")[-1]: r for r in parse_junit(junit, "b")}
    expected = {
        "test_pass": Verdict.GOOD,
        "test_fail": Verdict.BAD,
        "test_error": Verdict.INFRA,
        "test_infra": Verdict.INFRA,  # an InfraError in the test is not a verdict
        "test_skip": Verdict.SKIP,
        "test_xfail": Verdict.GOOD,  # the expected failure happened
        "test_xpass_strict": Verdict.BAD,  # a strict xpass fails the run
    }
    for name, verdict in expected.items():
        got, detail = bisect_run.verdict_of([records[name]])
        assert got is verdict, f"{name}: {got} ({detail})"
    params = [r for key, r in records.items() if key.startswith("test_param")]
    assert len(params) == 2
    assert bisect_run.verdict_of(params)[0] is Verdict.BAD  # one failing parameter is enough
    assert bisect_run.verdict_of([records["test_pass"], records["test_error"]])[0] is Verdict.INFRA
    assert bisect_run.verdict_of([records["test_fail"], records["test_error"]])[0] is Verdict.BAD


def test_unknown_node_id_is_input_error(suite: Path) -> None:
    with pytest.raises(InputError, match=r"--test test_throwaway.py::test_nope: no such test"):
        bisect_run.check_test("test_throwaway.py::test_nope", cwd=suite)
    with pytest.raises(InputError, match="no such test"):
        bisect_run.check_test("missing_file.py::test_x", cwd=suite)
    with pytest.raises(InputError, match="no such test"):
        run(suite, "test_nope")
    assert bisect_run.check_test("test_throwaway.py::test_pass", cwd=suite) == 1
    assert bisect_run.check_test("test_throwaway.py::test_param", cwd=suite) == 2


def test_a_node_id_that_looks_like_an_option_is_refused(suite: Path) -> None:
    with pytest.raises(InputError, match="expected a pytest node id"):
        bisect_run.check_test("--collect-only", cwd=suite)


def test_no_junit_at_all_is_infrastructure(tmp_path: Path) -> None:
    verdict, detail = bisect_run.verdict_from_junit(tmp_path / "none.xml", "t.py::x", 3, "INTERNALERROR boom")
    assert verdict is Verdict.INFRA and "INTERNALERROR boom" in detail
    with pytest.raises(InputError, match="no such test"):
        bisect_run.verdict_from_junit(tmp_path / "none.xml", "t.py::x", 4)


def test_a_test_run_that_times_out_is_infrastructure(suite: Path) -> None:
    """proc kills the child and raises HarnessTimeout (an InfraError): the engine retries it."""
    (suite / "test_hang.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(600)\n")
    with pytest.raises(HarnessTimeout, match="pytest test_hang.py::test_hangs: timed out"):
        bisect_run.run_test(BZ, "test_hang.py::test_hangs", None, "default", timeout=2, cwd=suite)


def test_a_missing_tool_during_a_build_is_infrastructure_not_a_skip() -> None:
    candidate = Candidate(1, "s/0001", "subject")
    tested: list[Path] = []

    def test(bzimage: Path) -> tuple[Verdict, str]:
        tested.append(bzimage)
        return Verdict.GOOD, ""

    def missing_make() -> BuildResult:
        raise ToolMissing("make: command not found (run 'harness doctor')")

    def compile_error() -> BuildResult:
        raise StageError("build rcfs/default failed (exit 2)", stage="build")

    with pytest.raises(ToolMissing):
        bisect_run._built_step(candidate, 0.0, missing_make, test)
    step = bisect_run._built_step(candidate, 0.0, compile_error, test)
    assert step.verdict is Verdict.SKIP and step.detail.startswith("build failed: build rcfs/default")
    assert not tested


def _patch(series: str, name: str) -> Patch:
    return Patch(series, name, Path(name), "0" * 64)


def test_prefix_chain_leaves_out_the_series_for_the_empty_prefix() -> None:
    series = Series("rcfs-testss", (_patch("compat", "a"), _patch("rcfs", "b"),
                                     _patch("rcfs-testss", "c")), ("compat", "rcfs", "rcfs-testss"))
    empty = Candidate(0, "rcfs-testss/(none)", "", prefix=2)
    full = Candidate(1, "rcfs-testss/c", "", prefix=3)
    assert bisect_run.prefix_chain(series, empty) == ("compat", "rcfs")
    assert bisect_run.prefix_chain(series, full) == ("compat", "rcfs", "rcfs-testss")


def test_default_log_paths_are_free_names_in_the_cache(isolated_cache: Path) -> None:
    first = bisect_run.default_log_path()
    assert first.parent == isolated_cache / "bisect" and first.suffix == ".jsonl"
    assert not (isolated_cache / "bisect").exists(), "nothing is created before the first step"
    first.parent.mkdir()
    first.write_text("")
    second = bisect_run.default_log_path()
    assert second != first and not second.exists()


# --- CLI validation (nothing is built or run) ----------------------------------------


def bisect_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["bisect", *args])
    return code, capsys.readouterr().err


def test_cli_needs_a_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = bisect_cli(capsys, "--test", "t.py::x")
    assert code == 2 and "give --series NAME" in err and "--git PATH" in err


def test_cli_refuses_good_bad_without_git(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = bisect_cli(capsys, "--series", "rcfs", "--good", "v1", "--bad", "v2", "--test", "t.py::x")
    assert code == 2 and "--good and --bad need --git PATH" in err


@pytest.mark.parametrize(("given", "missing"), [
    (["--good", "a"], "--bad"), (["--bad", "b"], "--good"), ([], "--good and --bad")])
def test_cli_git_needs_good_and_bad(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    given: list[str], missing: str) -> None:
    code, err = bisect_cli(capsys, "--git", str(tmp_path), *given, "--test", "t.py::x")
    assert code == 2 and f"{missing} REF missing" in err


def test_cli_needs_a_test(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bisect", "--series", "rcfs"])
    assert exit_info.value.code == 2
    assert "--test" in capsys.readouterr().err


def test_cli_replay_of_a_missing_log(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = bisect_cli(capsys, "--series", "rcfs", "--test", "t.py::x",
                           "--replay", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "--replay" in err and "no such file" in err


def test_cli_git_refuses_a_directory_that_is_no_repository(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path, isolated_cache: Path) -> None:
    code, err = bisect_cli(capsys, "--git", str(tmp_path), "--good", "a", "--bad", "b", "--test", "t.py::x")
    assert code == 2 and "not a git repository" in err
    assert not list((isolated_cache / "bisect").glob("*.jsonl")), "no empty log left behind"


def test_cli_unknown_series_and_unknown_test(capsys: pytest.CaptureFixture[str], suite: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, err = bisect_cli(capsys, "--series", "nope", "--test", "t.py::x")
    assert code == 2 and "unknown series 'nope'" in err
    monkeypatch.chdir(suite)
    code, err = bisect_cli(capsys, "--series", "rcfs", "--test", "test_throwaway.py::test_nope")
    assert code == 2 and "--test test_throwaway.py::test_nope: no such test" in err


def test_cli_git_with_a_bad_range(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for n in (1, 2):
        (repo / "f").write_text(str(n))
        subprocess.run(["git", "-C", str(repo), "add", "f"], check=True)
        subprocess.run(["git", "-C", str(repo), "commit", "-q", "--no-gpg-sign", "-m", f"c{n}"],
                       check=True, env=env)
    code, err = bisect_cli(capsys, "--git", str(repo), "--good", "HEAD", "--bad", "HEAD~1",
                           "--test", "t.py::x")
    assert code == 2 and "swap --good and --bad" in err
    code, err = bisect_cli(capsys, "--git", str(repo), "--good", "HEAD~1", "--bad", "HEAD",
                           "--test", "t.py::x", "--set", "BROKEN")
    assert code == 2 and "BROKEN" in err


def test_console_and_kernel_log_sections_come_from_the_terminal_output(tmp_path: Path) -> None:
    output = textwrap.dedent('''\
        F                                                                        [100%]
        =================================== FAILURES ===================================
        ___________________________________ test_x ____________________________________
        E       AssertionError: expected EBUSY
        -------------------------------- guest console ---------------------------------
        rcfs_mkdir : parent_nsproxy = c02e0280
        attaching task 240 to cfef3760
        ---------------------------------- kernel log ----------------------------------
        BUG: at kernel/rcfs.c:42
        =========================== short test summary info ============================
        FAILED t.py::test_x - AssertionError: expected EBUSY
        ''')
    sections = bisect_run.terminal_sections(output)
    assert sections == {"guest console": "rcfs_mkdir : parent_nsproxy = c02e0280\n"
                                         "attaching task 240 to cfef3760",
                        "kernel log": "BUG: at kernel/rcfs.c:42"}
    junit = tmp_path / "j.xml"
    junit.write_text('<testsuites><testsuite name="pytest"><testcase classname="t" name="test_x">'
                     '<failure message="AssertionError: expected EBUSY">E   AssertionError</failure>'
                     '</testcase></testsuite></testsuites>')
    verdict, detail = bisect_run.verdict_from_junit(junit, "t.py::test_x", 1, output)
    assert verdict is Verdict.BAD
    assert "--- guest console (end) ---\nrcfs_mkdir" in detail
    assert "--- kernel log ---\nBUG: at kernel/rcfs.c:42" in detail


@pytest.mark.parametrize("ambiguous", [False, True])
def test_cli_exit_status_and_final_output(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, ambiguous: bool) -> None:
    candidates = [Candidate(i, f"s/{i:04}.patch", f"subject {i}", prefix=i) for i in range(4)]
    steps = (StepResult(candidates[0], Verdict.GOOD), StepResult(candidates[3], Verdict.BAD, "boom"),
             StepResult(candidates[1], Verdict.SKIP if ambiguous else Verdict.GOOD),
             StepResult(candidates[2], Verdict.BAD, "rmdir: OK, expected EBUSY"))
    outcome = BisectOutcome(
        first_bad=None if ambiguous else candidates[2],
        detail="" if ambiguous else "rmdir: OK, expected EBUSY",
        possible=tuple(candidates[1:3]) if ambiguous else (candidates[2],),
        last_good=candidates[0] if ambiguous else candidates[1], steps=steps, runner_calls=4, builds=3)
    seen: dict[str, object] = {}

    def fake(series: str, nodeid: str, config_name: str, overrides: list[str], log: Path,
             **kwargs: object) -> BisectOutcome:
        seen.update(series=series, nodeid=nodeid, config=config_name, overrides=overrides, log=log)
        log.write_text('{"event": "start", "candidates": 4}\n')
        return outcome

    monkeypatch.setattr(bisect_run, "bisect_series", fake)
    log = tmp_path / "b.jsonl"
    code = cli.main(["bisect", "--series", "s", "--test", "t.py::x", "--set", "CONFIG_A=y",
                     "--log", str(log)])
    out = capsys.readouterr().out
    assert seen == {"series": "s", "nodeid": "t.py::x", "config": "default", "overrides": ["CONFIG_A=y"],
                    "log": log}
    assert out.splitlines()[-1].startswith(f"bisect log: {log}")
    assert "4 candidates, 4 steps, 3 builds" in out
    if ambiguous:
        assert code == 1
        assert "s/0001.patch subject 1  (skipped)" in out and "s/0002.patch subject 2" in out
    else:
        assert code == 0
        assert out.startswith("first bad: s/0002.patch subject 2")
        assert "last good: s/0001.patch subject 1" in out and "expected EBUSY" in out
