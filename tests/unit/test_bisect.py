from __future__ import annotations

import errno
import json
import math
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from harness import proc
from harness.errors import DiskFull, HarnessTimeout, InfraError, InputError, StageError, ToolMissing
from harness.kernel import patches
from harness.run import bisect as bs
from harness.run import bisect_candidates as bc
from harness.run.bisect import Candidate, StepResult, Verdict

G, B, S, IE = Verdict.GOOD, Verdict.BAD, Verdict.SKIP, Verdict.INFRA


def make_candidates(n: int) -> list[Candidate]:
    return [Candidate(i, f"c{i}", f"subject {i}") for i in range(n)]


class FakeRunner:
    """Verdicts from a table: index -> verdict, or index -> list of verdicts (one per call)."""

    def __init__(self, table: Mapping[int, Verdict | list[Verdict]], *, built: bool = True) -> None:
        self.table = {k: list(v) if isinstance(v, list) else v for k, v in table.items()}
        self.calls: list[int] = []
        self.built = built

    def __call__(self, candidate: Candidate) -> StepResult:
        self.calls.append(candidate.index)
        entry = self.table[candidate.index]
        verdict = entry.pop(0) if isinstance(entry, list) else entry
        return StepResult(candidate, verdict, f"output of {candidate.id}: {verdict.name}",
                          duration=1.0, built=self.built)


def monotonic(n: int, first_bad: int, skips: set[int] | frozenset[int] = frozenset()) -> FakeRunner:
    return FakeRunner({i: S if i in skips else (B if i >= first_bad else G) for i in range(n)})


def quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9, 17, 100])
def test_finds_every_first_bad_within_the_bound(n: int) -> None:
    for first_bad in range(1, n):
        runner = monotonic(n, first_bad)
        outcome = bs.bisect(make_candidates(n), runner, progress=quiet)
        assert outcome.first_bad is not None and outcome.first_bad.index == first_bad
        assert outcome.possible == (outcome.first_bad,)
        assert outcome.last_good.index == first_bad - 1
        assert outcome.detail == f"output of c{first_bad}: BAD"
        assert len(runner.calls) <= math.ceil(math.log2(n)) + 2
        assert len(set(runner.calls)) == len(runner.calls), "a candidate was tested twice"
        assert runner.calls[:2] == [0, n - 1], "endpoints are verified first"
        assert outcome.runner_calls == outcome.builds == len(runner.calls)


def test_first_bad_at_first_middle_and_last_position() -> None:
    n = 11
    for first_bad in (1, 5, 10):
        outcome = bs.bisect(make_candidates(n), monotonic(n, first_bad), progress=quiet)
        assert outcome.first_bad is not None and outcome.first_bad.id == f"c{first_bad}"
        assert not outcome.ambiguous
        assert outcome.summary().startswith(f"first bad: c{first_bad} subject {first_bad} (")


def test_outcome_counts_steps_builds_and_time() -> None:
    runner = monotonic(9, 4)
    runner.built = False
    outcome = bs.bisect(make_candidates(9), runner, progress=quiet)
    assert outcome.builds == 0
    assert outcome.runner_calls == len(outcome.steps) == len(runner.calls)
    assert [s.candidate.index for s in outcome.steps] == runner.calls
    assert outcome.duration >= 0


def test_good_endpoint_that_fails() -> None:
    cands = make_candidates(5)
    cands[0] = Candidate(0, "c0", "s", label="the empty prefix of top (base chain: base)")
    with pytest.raises(InputError, match=r"^the empty prefix of top \(base chain: base\) does not pass: "
                                         r"output of c0: BAD"):
        bs.bisect(cands, monotonic(5, 0), progress=quiet)


def test_bad_endpoint_that_passes() -> None:
    runner = FakeRunner(dict.fromkeys(range(5), G))
    with pytest.raises(InputError, match=r"the bad endpoint c4 subject 4 does not fail: output of c4"):
        bs.bisect(make_candidates(5), runner, progress=quiet)
    assert runner.calls == [0, 4]


def test_endpoint_that_cannot_be_built() -> None:
    with pytest.raises(StageError, match="the good endpoint c0 subject 0 cannot be tested"):
        bs.bisect(make_candidates(5), FakeRunner({0: S}), progress=quiet)


def test_fewer_than_two_candidates() -> None:
    with pytest.raises(InputError, match="nothing to bisect"):
        bs.bisect(make_candidates(1), FakeRunner({}), progress=quiet)


def test_skip_far_from_the_answer_is_stepped_around() -> None:
    n = 16
    runner = monotonic(n, 12, skips={7, 8})
    outcome = bs.bisect(make_candidates(n), runner, progress=quiet)
    assert outcome.first_bad is not None and outcome.first_bad.index == 12
    assert len(set(runner.calls)) == len(runner.calls)
    skipped = sum(1 for i in runner.calls if i in {7, 8})
    assert len(runner.calls) <= math.ceil(math.log2(n)) + 2 + skipped


def test_skips_next_to_the_first_bad_make_it_ambiguous() -> None:
    n = 10
    runner = monotonic(n, 6, skips={4, 5})
    outcome = bs.bisect(make_candidates(n), runner, progress=quiet)
    assert outcome.ambiguous and outcome.first_bad is None
    assert [c.index for c in outcome.possible] == [4, 5, 6]
    assert outcome.last_good.index == 3
    assert outcome.detail == ""
    text = outcome.summary()
    assert "the first bad one is one of:" in text
    assert "c4 subject 4  (skipped)" in text and "c6 subject 6\n" not in text
    assert text.splitlines()[-1] == "  c6 subject 6"
    assert len(set(runner.calls)) == len(runner.calls)


def test_everything_between_the_endpoints_skipped() -> None:
    runner = FakeRunner({0: G, 1: S, 2: S, 3: B})
    outcome = bs.bisect(make_candidates(4), runner, progress=quiet)
    assert [c.index for c in outcome.possible] == [1, 2, 3]
    assert sorted(runner.calls) == [0, 1, 2, 3]


def test_infra_then_good_is_retried_once() -> None:
    runner = FakeRunner({0: G, 1: [IE, G], 2: B})
    outcome = bs.bisect(make_candidates(3), runner, progress=quiet)
    assert runner.calls == [0, 2, 1, 1]
    assert outcome.first_bad is not None and outcome.first_bad.index == 2
    assert [s.verdict for s in outcome.steps] == [G, B, IE, G]
    assert outcome.runner_calls == 4


def test_infra_twice_is_a_skip() -> None:
    runner = FakeRunner({0: G, 1: [IE, IE], 2: B})
    outcome = bs.bisect(make_candidates(3), runner, progress=quiet)
    assert runner.calls == [0, 2, 1, 1]
    assert [c.index for c in outcome.possible] == [1, 2]
    last = outcome.steps[-1]
    assert last.verdict is S and last.infra
    assert last.detail.startswith("infrastructure error twice: ")


def test_runner_exceptions_map_to_verdicts() -> None:
    calls: list[int] = []

    def runner(c: Candidate) -> StepResult:
        calls.append(c.index)
        if c.index == 1:
            raise InfraError("ssh: connection reset")
        if c.index == 2:
            raise StageError("patch top/0002 does not apply")
        return StepResult(c, G if c.index < 3 else B)

    outcome = bs.bisect(make_candidates(5), runner, progress=quiet)
    assert calls.count(1) == 2
    by_index = {s.candidate.index: s for s in outcome.steps}
    assert by_index[1].infra and "ssh: connection reset" in by_index[1].detail
    assert by_index[2].verdict is S and by_index[2].detail == "patch top/0002 does not apply"
    assert [c.index for c in outcome.possible] == [1, 2, 3]


@pytest.mark.parametrize("error", [
    ToolMissing("make: command not found (run 'harness doctor')"),
    HarnessTimeout("pytest tests/x.py::t: timed out after 900s"),
], ids=["tool-missing", "timeout"])
def test_missing_tool_and_timeout_are_infrastructure_not_build_failures(
        error: InfraError, tmp_path: Path) -> None:
    """proc raises ToolMissing / HarnessTimeout: retried once, then an infra skip (tried again
    on replay), never a SKIP as if the candidate could not be built."""
    calls: list[int] = []

    def runner(c: Candidate) -> StepResult:
        calls.append(c.index)
        if c.index == 2:
            raise error
        return StepResult(c, G if c.index < 4 else B)

    log = tmp_path / "bisect.jsonl"
    outcome = bs.bisect(make_candidates(5), runner, log=log, progress=quiet)
    assert calls == [0, 4, 2, 2, 1, 3]
    attempts = [s for s in outcome.steps if s.candidate.index == 2]
    assert [(s.verdict, s.infra) for s in attempts] == [(IE, False), (S, True)]
    assert str(error) in attempts[-1].detail
    assert outcome.first_bad is not None and outcome.first_bad.index == 4
    calls.clear()
    bs.bisect(make_candidates(5), runner, log=tmp_path / "again.jsonl", replay_from=log,
              progress=quiet)
    assert calls == [2, 2], "an infrastructure skip is not reused from the log"


def test_a_full_disk_stops_the_bisect() -> None:
    calls: list[int] = []

    def runner(c: Candidate) -> StepResult:
        calls.append(c.index)
        if c.index == 2:
            raise DiskFull(Path("/cache/builds/x"), "building")
        return StepResult(c, G if c.index < 4 else B)

    with pytest.raises(DiskFull, match="no space left on device"):
        bs.bisect(make_candidates(5), runner, progress=quiet)
    assert calls == [0, 4, 2], "no retry and no further candidates once the disk is full"


def test_infra_twice_at_an_endpoint() -> None:
    with pytest.raises(StageError, match="cannot be tested.*infrastructure error twice"):
        bs.bisect(make_candidates(3), FakeRunner({0: [IE, IE]}), progress=quiet)


def test_progress_lines() -> None:
    lines: list[str] = []
    bs.bisect(make_candidates(8), monotonic(8, 3), progress=lines.append)
    steps = [line for line in lines if line.startswith("step ")]
    assert steps[0].startswith("step 1 of about 5: testing c0 subject 0 (elapsed ")
    assert steps[0].endswith("s)")
    assert steps[1].startswith("step 2 of about 5: testing c7 subject 7 ")
    assert any(line.startswith("  BAD in ") for line in lines)


def test_default_progress_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    bs.bisect(make_candidates(3), monotonic(3, 1))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "step 1 of about 4: testing c0" in captured.err


def test_log_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    runner = FakeRunner({0: G, 1: G, 2: [IE, G], 3: G, 4: B, 5: B, 6: B, 7: B})
    outcome = bs.bisect(make_candidates(8), runner, log=log, progress=quiet)
    steps = bs.replay(log)
    assert [(s.candidate.id, s.verdict, s.detail) for s in steps] == [
        (s.candidate.id, s.verdict, s.detail) for s in outcome.steps]
    assert all(s.duration == 1.0 and s.built for s in steps)
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end"
    end = json.loads(log.read_text().splitlines()[-1])
    assert end["first_bad"] == "c4" and end["runner_calls"] == len(runner.calls)


def test_log_keeps_an_excerpt_of_long_details(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    text = "head\n" + "x" * 20000 + "\ntail"

    def runner(c: Candidate) -> StepResult:
        return StepResult(c, G if c.index == 0 else B, text)

    outcome = bs.bisect(make_candidates(2), runner, log=log, progress=quiet)
    assert outcome.detail == text
    recorded = bs.replay(log)[-1].detail
    assert len(recorded) < 4100 and recorded.startswith("head\n") and recorded.endswith("\ntail")
    assert "characters cut" in recorded


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    n, first_bad = 33, 20
    full = monotonic(n, first_bad)
    expected = bs.bisect(make_candidates(n), full, progress=quiet)

    interrupted = monotonic(n, first_bad)

    def dies_on_fourth(c: Candidate) -> StepResult:
        if len(interrupted.calls) == 3:
            raise Interrupt
        return interrupted(c)

    with pytest.raises(Interrupt):
        bs.bisect(make_candidates(n), dies_on_fourth, log=log, replay_from=log, progress=quiet)
    assert len(bs.replay(log)) == 3

    resumed = monotonic(n, first_bad)
    lines: list[str] = []
    outcome = bs.bisect(make_candidates(n), resumed, log=log, replay_from=log, progress=lines.append)
    assert outcome.first_bad == expected.first_bad
    assert interrupted.calls + resumed.calls == full.calls
    assert not set(interrupted.calls) & set(resumed.calls)
    assert outcome.runner_calls == len(resumed.calls)
    assert [s.replayed for s in outcome.steps] == [True] * 3 + [False] * len(resumed.calls)
    assert any("(recorded in the log)" in line for line in lines)
    # the shared log was not padded with copies of the replayed steps
    assert len(bs.replay(log)) == len(full.calls)


def test_replay_into_a_new_log_copies_the_reused_steps(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    bs.bisect(make_candidates(6), monotonic(6, 2), log=old, progress=quiet)
    runner = FakeRunner({})
    outcome = bs.bisect(make_candidates(6), runner, log=new, replay_from=old, progress=quiet)
    assert runner.calls == [] and outcome.runner_calls == 0
    assert outcome.first_bad is not None and outcome.first_bad.index == 2
    assert [s.candidate.id for s in bs.replay(new)] == [s.candidate.id for s in bs.replay(old)]
    assert all(s.replayed for s in bs.replay(new))


def test_replay_needs_the_same_candidate_identity(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    cands = [Candidate(i, f"p{i}", "s", digest=f"d{i}") for i in range(3)]
    bs.bisect(cands, monotonic(3, 1), log=log, progress=quiet)
    changed = [cands[0], cands[1], Candidate(2, "p2", "s", digest="edited")]
    runner = monotonic(3, 1)
    bs.bisect(changed, runner, replay_from=log, progress=quiet)
    assert runner.calls == [2]


def test_replay_does_not_reuse_infra_skips(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    bs.bisect(make_candidates(3), FakeRunner({0: G, 1: [IE, IE], 2: B}), log=log, progress=quiet)
    runner = FakeRunner({1: G})
    outcome = bs.bisect(make_candidates(3), runner, log=log, replay_from=log, progress=quiet)
    assert runner.calls == [1]
    assert outcome.first_bad is not None and outcome.first_bad.index == 2


def test_replay_refuses_a_log_of_another_test(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    bs.bisect(make_candidates(3), monotonic(3, 1), log=log, progress=quiet,
              context={"test": "tests/guest/test_a.py::test_x", "config": "default"})
    with pytest.raises(InputError, match="recorded for config=default, test=tests/guest/test_a.py::test_x"):
        bs.bisect(make_candidates(3), monotonic(3, 1), log=log, replay_from=log, progress=quiet,
                  context={"test": "tests/guest/test_a.py::test_y", "config": "default"})


def test_replay_of_a_missing_log_starts_afresh(tmp_path: Path) -> None:
    log = tmp_path / "sub" / "bisect.jsonl"
    runner = monotonic(4, 2)
    bs.bisect(make_candidates(4), runner, log=log, replay_from=log, progress=quiet)
    assert runner.calls == [0, 3, 1, 2] and log.is_file()


def test_replay_tolerates_a_cut_last_line_only(tmp_path: Path) -> None:
    log = tmp_path / "bisect.jsonl"
    bs.bisect(make_candidates(4), monotonic(4, 2), log=log, progress=quiet)
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines) + '\n{"event": "st')
    assert len(bs.replay(log)) == 4
    log.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(InputError, match=r"bisect\.jsonl:2: not a JSON log record"):
        bs.replay(log)


# --- git -------------------------------------------------------------------------

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example", "GIT_COMMITTER_NAME": "T",
    "GIT_COMMITTER_EMAIL": "t@example",
}


def git(repo: Path, *args: str) -> str:
    return proc.run(["git", "-C", repo, *args], env=GIT_ENV).stdout.strip()


def commit(repo: Path, name: str, text: str, subject: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "linux"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    for i in range(6):
        commit(r, "f.txt", f"version {i}\n", f"change {i}")
    git(r, "tag", "v0", "HEAD~5")
    return r


def test_git_candidates(repo: Path) -> None:
    shas = git(repo, "rev-list", "--reverse", "HEAD").split()
    cands = bc.git_candidates(repo, "v0", "main~1")
    assert [c.id for c in cands] == shas[:5]
    assert [c.subject for c in cands] == [f"change {i}" for i in range(5)]
    assert [c.index for c in cands] == list(range(5))
    assert cands[0].label == f"--good v0 ({shas[0][:12]})"
    assert cands[-1].label == f"--bad main~1 ({shas[4][:12]})"
    assert cands[2].short_id == shas[2][:12] and cands[2].digest == shas[2]


def test_git_candidates_invalid_refs(repo: Path) -> None:
    with pytest.raises(InputError, match=rf"--good REF 'nope' is not a commit in {repo}"):
        bc.git_candidates(repo, "nope", "main")
    with pytest.raises(InputError, match=r"--bad REF '--all' is not a commit"):
        bc.git_candidates(repo, "v0", "--all")
    with pytest.raises(InputError, match="not a git repository"):
        bc.git_candidates(repo.parent, "v0", "main")
    with pytest.raises(InputError, match="no such directory"):
        bc.git_candidates(repo / "missing", "v0", "main")


def test_git_candidates_order_and_ancestry(repo: Path) -> None:
    with pytest.raises(InputError, match=r"is not an ancestor of --bad v0 .* swap --good and --bad"):
        bc.git_candidates(repo, "main", "v0")
    with pytest.raises(InputError, match="same commit"):
        bc.git_candidates(repo, "main", "HEAD")
    git(repo, "checkout", "-q", "-b", "side", "main~3")
    commit(repo, "g.txt", "side\n", "side work")
    with pytest.raises(InputError, match=r"--good side \(\w+\) is not an ancestor of --bad main"):
        bc.git_candidates(repo, "side", "main")


def test_git_candidates_follow_the_first_parent(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "side", "main~2")
    side = commit(repo, "g.txt", "side\n", "side work")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    cands = bc.git_candidates(repo, "main~3", "main")
    assert [c.subject for c in cands] == ["change 3", "change 4", "change 5", "merge side"]
    assert side not in [c.id for c in cands]
    with pytest.raises(InputError, match="not on the first-parent history"):
        bc.git_candidates(repo, "side", "main")


def test_git_worktree_on_a_full_disk_is_disk_full_and_leaves_nothing(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", full)
    with pytest.raises(DiskFull, match=r"worktrees: no space left on device while exporting"):
        with bc.git_worktree(repo, "main"):
            pass
    assert not any((Path(os.environ["HARNESS_CACHE"]) / "worktrees").iterdir())


def test_git_worktree_leaves_the_repository_alone(repo: Path) -> None:
    (repo / "f.txt").write_text("uncommitted edit\n")
    head = git(repo, "rev-parse", "HEAD")
    with bc.git_worktree(repo, "v0") as tree:
        assert (tree / "f.txt").read_text() == "version 0\n"
        assert not (tree / ".git").exists()
        assert (tree / "f.txt").stat().st_mode & 0o222 == 0
        assert tree.is_relative_to(Path(os.environ["HARNESS_CACHE"]))
    assert not tree.exists() and not tree.parent.exists()
    assert (repo / "f.txt").read_text() == "uncommitted edit\n"
    assert git(repo, "rev-parse", "HEAD") == head
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def test_git_worktree_is_removed_on_error(repo: Path) -> None:
    with pytest.raises(RuntimeError), bc.git_worktree(repo, "main") as tree:
        raise RuntimeError
    assert not tree.exists()
    with pytest.raises(InputError, match="commit 'nope' is not a commit"), bc.git_worktree(repo, "nope"):
        pass


def test_git_worktree_files_carry_the_export_time(repo: Path) -> None:
    git(repo, "commit", "-q", "--amend", "--no-edit", "--date=2001-01-01T00:00:00")
    with bc.git_worktree(repo, "main") as tree:
        assert (tree / "f.txt").stat().st_mtime > 1_600_000_000


def test_stale_worktrees_of_dead_processes_are_removed(repo: Path) -> None:
    parent = Path(os.environ["HARNESS_CACHE"]) / "worktrees"
    stale = parent / "999999999-abc-x"
    (stale / "tree").mkdir(parents=True)
    with bc.git_worktree(repo, "main"):
        assert not stale.exists()


def test_git_source_shares_one_id_per_repository(repo: Path) -> None:
    with bc.git_source(repo, "v0") as a:
        a_id, a_origin = a.id, a.origin
        assert (a.tree / "f.txt").read_text() == "version 0\n"
    with bc.git_source(repo, "main") as b:
        assert b.id == a_id
        assert b.origin != a_origin and b.origin.endswith("@" + git(repo, "rev-parse", "main"))


# --- series ----------------------------------------------------------------------

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 21))


def make_patch(old: str, new: str, subject: str) -> str:
    import difflib

    body = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/f.txt", "b/f.txt"))
    return f"From: Test <t@example>\nSubject: {subject}\n\nmsg\n---\n{body}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Series ``top`` (4 patches) on ``base`` (1 patch)."""
    r = tmp_path / "patches"
    (r / "base").mkdir(parents=True)
    text = ORIGINAL.replace("line 1\n", "line one\n")
    (r / "base" / "0001-one.patch").write_text(make_patch(ORIGINAL, text, "[PATCH] base one"))
    (r / "base" / "series").write_text("0001-one.patch\n")
    (r / "top").mkdir()
    names = []
    for i, n in enumerate((4, 8, 12, 16), 1):
        new = text.replace(f"line {n}\n", f"line {n} changed\n")
        name = f"000{i}-line{n}.patch"
        (r / "top" / name).write_text(make_patch(text, new, f"[PATCH {i}/4] change line {n}"))
        names.append(name)
        text = new
    (r / "top" / "series").write_text("\n".join(names) + "\n")
    (r / "top" / "base").write_text("base\n")
    return r


def test_series_candidates(root: Path) -> None:
    series = patches.load_series("top", root)
    cands = bc.series_candidates(series)
    assert [c.id for c in cands] == ["top/(none)", "top/0001-line4.patch", "top/0002-line8.patch",
                                     "top/0003-line12.patch", "top/0004-line16.patch"]
    assert [c.prefix for c in cands] == [1, 2, 3, 4, 5]
    assert cands[0].subject == "no patch of top (base chain: base)"
    assert cands[0].label == "the empty prefix of top (base chain: base)"
    assert cands[-1].label == "the full series top"
    assert cands[3].subject == "[PATCH 3/4] change line 12"
    empty = bc.series_prefix(series, cands[0])
    assert [f"{p.series}/{p.name}" for p in empty.patches] == ["base/0001-one.patch"]
    assert empty.name == "top"
    assert bc.series_prefix(series, cands[-1]).patches == series.patches
    assert len({c.digest for c in cands}) == len(cands)


def test_series_without_a_base(root: Path) -> None:
    cands = bc.series_candidates(patches.load_series("base", root))
    assert [c.prefix for c in cands] == [0, 1]
    assert cands[0].subject == "no patch of base (base chain: none, pristine source)"


def test_bisect_a_series_for_real(root: Path, tmp_path: Path) -> None:
    """The runner applies each prefix to a tree; the 'test' fails once line 12 changed."""
    series = patches.load_series("top", root)

    def runner(c: Candidate) -> StepResult:
        tree = tmp_path / f"tree-{c.index}"
        tree.mkdir()
        (tree / "f.txt").write_text(ORIGINAL)
        patches.apply_series(bc.series_prefix(series, c), tree)
        text = (tree / "f.txt").read_text()
        assert "line one\n" in text  # the base chain is always there
        bad = "line 12 changed" in text
        return StepResult(c, B if bad else G, "AssertionError: line 12 changed" if bad else "")

    outcome = bs.bisect(bc.series_candidates(series), runner, progress=quiet)
    assert outcome.first_bad is not None and outcome.first_bad.id == "top/0003-line12.patch"
    assert outcome.detail == "AssertionError: line 12 changed"
    assert outcome.runner_calls <= math.ceil(math.log2(5)) + 2
