"""``harness bisect`` on the real kernel: a git history and a patch series, each with one regression.

SLOW: each test builds kernels (incrementally, after the first build of its
build entry) and boots one VM per step; about 2-5 minutes each on 2 cores.

(a) git: a synthetic history in ``$HARNESS_CACHE/bisect-fixture/repo`` (made
    once, reused while intact): pristine 2.6.20, the rcfs and rcfs-testss
    patches as commits, 2 harmless commits, ONE commit that lets rmdir remove a
    container with a task attached (no more EBUSY), 3 harmless commits.
    ``harness bisect --git ... --series compat`` must name that commit.
(b) series: a patches root (``$HARNESS_PATCHES``) with a series ``regress`` on
    ``rcfs-testss``: harmless, harmless, the regression, harmless.  A series
    bisect must name the regression patch.

The test node is ``bisect_probe/test_rmdir_busy.py`` (rmdir with a task
attached must fail with EBUSY).  The helpers that make the fixtures are also
used by ``bench/bench.py`` (``bench_bisect``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cache, resources
from harness.kernel import build, patches
from harness.kernel.source import Source
from harness.run import bisect_run
from harness.run.bisect import BisectOutcome, Verdict, replay

REPO = Path(__file__).resolve().parents[2]
PROBE = "tests/target/bisect_probe/test_rmdir_busy.py::test_rmdir_with_task_attached_is_ebusy"
TESTSS_SETS = ("CONFIG_RCFS_TESTSS=y", "CONFIG_RCFS_TESTSS_COUNT=3")
FIXTURE_VERSION = 2
REGRESSION_SUBJECT = "rcfs: let rmdir remove a container whose tasks are still attached"

# the busy check of rcfs_rmdir() (kernel/rcfs.c as the rcfs series leaves it)
BUSY_CHECK = "if (atomic_read(&ns->count) > 1) {"
BUSY_CHECK_BROKEN = "if (0 && atomic_read(&ns->count) > 1) {"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bisect Fixture", "GIT_AUTHOR_EMAIL": "fixture@localhost",
    "GIT_COMMITTER_NAME": "Bisect Fixture", "GIT_COMMITTER_EMAIL": "fixture@localhost",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


# --- helpers (also used by bench/bench.py) -----------------------------------------


def break_rmdir_busy_check(text: str) -> str:
    """kernel/rcfs.c with rcfs_rmdir()'s task check disabled (asserts the edit applied)."""
    start = text.index("static int rcfs_rmdir(")
    at = text.index(BUSY_CHECK, start)
    assert at - start < 1000, "the busy check is not in rcfs_rmdir()"
    broken = text[:at] + BUSY_CHECK_BROKEN + text[at + len(BUSY_CHECK):]
    assert broken != text and broken.count(BUSY_CHECK_BROKEN) == 1
    return broken


def _git(repo: Path, *args: str, date: int | None = None) -> str:
    env = dict(os.environ, **GIT_ENV)
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"{date} +0000"
    out = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout


@dataclass(frozen=True)
class GitFixture:
    repo: Path
    good: str  # the rcfs-testss commit: the test passes
    regression: str  # the commit that breaks it
    bad: str  # HEAD
    commits: int  # candidates in good..bad plus good


def _fixture_intact(repo: Path, meta: dict[str, object]) -> bool:
    if meta.get("version") != FIXTURE_VERSION or not (repo / ".git").is_dir():
        return False
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0 or head.stdout.strip() != meta.get("bad"):
        return False
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"],
                            capture_output=True, text=True)
    return status.returncode == 0 and not status.stdout.strip()


def _commit(repo: Path, subject: str, date: int) -> str:
    _git(repo, "add", "-A", "-f")
    _git(repo, "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", subject, date=date)
    return _git(repo, "rev-parse", "HEAD").strip()


def _harmless(repo: Path, n: int, date: int) -> str:
    doc = repo / "Documentation" / "bisect-fixture.txt"
    old = doc.read_text() if doc.exists() else "Notes added by the harness bisect fixture.\n"
    doc.write_text(old + f"Harmless change {n}: documentation only.\n")
    return _commit(repo, f"Documentation: bisect fixture note {n}", date)


def make_git_fixture(pristine: Path) -> GitFixture:
    """The synthetic history in ``$HARNESS_CACHE/bisect-fixture/repo`` (reused while intact)."""
    base = cache.subdir("bisect-fixture")
    repo, meta_path = base / "repo", base / "fixture.json"
    with cache.lock("bisect-fixture"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if not _fixture_intact(repo, meta):
            meta_path.unlink(missing_ok=True)
            cache.remove_tree(repo)
            stage = base / "repo.stage"
            cache.remove_tree(stage)
            subprocess.run(["cp", "-a", f"{pristine}/.", str(stage)], check=True)
            subprocess.run(["chmod", "-R", "u+w", str(stage)], check=True)
            _git(stage, "init", "-q")
            date = 1170000000  # Feb 2007, 2.6.20 time
            _commit(stage, "Linux 2.6.20", date)
            for patch in (*patches.load_series("rcfs").own_patches(),
                          *patches.load_series("rcfs-testss").own_patches()):
                date += 3600
                patches.apply_patch(patch, stage)
                good = _commit(stage, re.sub(r"^\[PATCH[^]]*\]\s*", "", patch.subject), date)
            for n in (1, 2):
                date += 3600
                _harmless(stage, n, date)
            rcfs_c = stage / "kernel" / "rcfs.c"
            rcfs_c.write_text(break_rmdir_busy_check(rcfs_c.read_text()))
            date += 3600
            regression = _commit(stage, REGRESSION_SUBJECT, date)
            for n in (3, 4, 5):
                date += 3600
                bad = _harmless(stage, n, date)
            _git(stage, "gc", "-q", "--auto")
            os.rename(stage, repo)
            meta = {"version": FIXTURE_VERSION, "good": good, "regression": regression, "bad": bad,
                    "commits": 7}
            meta_path.write_text(json.dumps(meta, indent=2))
    return GitFixture(repo, str(meta["good"]), str(meta["regression"]), str(meta["bad"]),
                      int(str(meta["commits"])))


def repo_state(repo: Path) -> dict[str, object]:
    """What must not change when bisect reads the repository."""
    return {
        "head": _git(repo, "rev-parse", "HEAD"),
        "symbolic": _git(repo, "symbolic-ref", "-q", "HEAD"),
        "refs": _git(repo, "for-each-ref"),
        "status": _git(repo, "status", "--porcelain", "--untracked-files=all"),
        "worktrees": _git(repo, "worktree", "list", "--porcelain"),
        "git_dir": sorted(os.listdir(repo / ".git")),
    }


def _unified(old: str, new: str, path: str, subject: str) -> str:
    body = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        f"a/{path}" if old else "/dev/null", f"b/{path}"))
    return f"From: Bisect Fixture <fixture@localhost>\nSubject: [PATCH] {subject}\n\n---\n{body}"


REGRESS_PATCHES = (
    ("0001-doc-add-a-note.patch", "Documentation: add a bisect note", "doc1"),
    ("0002-doc-extend-the-note.patch", "Documentation: extend the bisect note", "doc2"),
    ("0003-rcfs-rmdir-ignores-tasks.patch", REGRESSION_SUBJECT, "regression"),
    ("0004-doc-final-note.patch", "Documentation: a final bisect note", "doc3"),
)


def make_regress_series(root: Path, src: Source, work: Path) -> Path:
    """A patches root: a copy of patches/ plus series ``regress`` (on rcfs-testss)."""
    shutil.copytree(resources.shipped("patches"), root)
    tree = work / "rcfs-testss-tree"
    tree.mkdir(parents=True)
    build.link_tree(src.tree, tree)
    patches.apply_series(patches.load_series("rcfs-testss", root), tree)
    rcfs_c = (tree / "kernel" / "rcfs.c").read_text()
    cache.remove_tree(tree)
    directory = root / "regress"
    directory.mkdir()
    (directory / "base").write_text("rcfs-testss\n")
    note = ""
    for filename, subject, kind in REGRESS_PATCHES:
        if kind == "regression":
            text = _unified(rcfs_c, break_rmdir_busy_check(rcfs_c), "kernel/rcfs.c", subject)
        else:
            old, note = note, note + f"{subject}.\n"
            text = _unified(old, note, "Documentation/bisect-note.txt", subject)
        (directory / filename).write_text(text)
    (directory / "series").write_text("".join(f"{name}\n" for name, _s, _k in REGRESS_PATCHES))
    return root


# --- fixtures ------------------------------------------------------------------------


TAG = "HARNESS_BISECT_TEST_TAG"


def tagged_qemus(tag: str) -> list[str]:
    """QEMU processes whose environment carries ``TAG=tag``: started by this test (its harness
    and pytest children pass the environment on), not by other runs sharing the machine."""
    marker = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "qemu-system" in cmdline and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name} {cmdline.strip()}")
        except OSError:
            continue
    return found


@pytest.fixture(autouse=True)
def no_qemu_left(kernel_source: Source, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    worktrees = set(os.listdir(cache.subdir("worktrees")))
    yield
    deadline = time.monotonic() + 10
    while (left := tagged_qemus(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"QEMU processes left behind: {left}"
    assert set(os.listdir(cache.subdir("worktrees"))) <= worktrees, "git export trees left behind"


def _figures(outcome_steps: int, candidates: int, builds: int, runs: int, seconds: float) -> str:
    return (f"{candidates} candidates, {outcome_steps} steps, {runs} runs, {builds} builds, "
            f"{seconds:.0f}s")


# --- the tests -----------------------------------------------------------------------


def test_git_bisect_names_the_injected_commit(kernel_source: Source, tmp_path: Path,
                                              record_property: Callable[[str, object], None]) -> None:
    """SLOW (about 2-5 min): harness bisect --git on the synthetic history, compat on top."""
    fixture = make_git_fixture(kernel_source.tree)
    before = repo_state(fixture.repo)
    log = tmp_path / "git-bisect.jsonl"
    argv = [sys.executable, "-m", "harness", "bisect", "--git", str(fixture.repo),
            "--good", fixture.good, "--bad", "HEAD", "--series", "compat", "--test", PROBE,
            *(arg for s in TESTSS_SETS for arg in ("--set", s)), "--log", str(log)]
    started = time.monotonic()
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    print(out.stderr[-6000:])
    print(out.stdout)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-3000:]}"
    assert f"commit {fixture.regression}" in out.stdout
    assert REGRESSION_SUBJECT in out.stdout.splitlines()[0]
    assert "EBUSY" in out.stdout, "the failing test's output is shown"
    assert f"bisect log: {log}" in out.stdout
    assert repo_state(fixture.repo) == before, "bisect changed the fixture repository"

    steps = replay(log)
    end = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert end["event"] == "end" and end["first_bad"] == fixture.regression
    verdicts = {s.candidate.id: s.verdict for s in steps}
    assert verdicts[fixture.good] is Verdict.GOOD and verdicts[fixture.bad] is Verdict.BAD
    assert len(steps) <= 2 + 3, "ceil(log2 7) + 2 steps at most"
    figures = _figures(len(steps), fixture.commits, end["builds"], end["runner_calls"], seconds)
    print(f"git bisect: {figures}")
    record_property("git_bisect", figures)


def test_series_bisect_names_the_regression_patch(kernel_source: Source, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  record_property: Callable[[str, object], None]) -> None:
    """SLOW (about 2-5 min): bisect_series on ``regress`` (4 patches on rcfs-testss)."""
    root = make_regress_series(tmp_path / "patches", kernel_source, tmp_path)
    monkeypatch.setenv("HARNESS_PATCHES", str(root))
    monkeypatch.chdir(REPO)
    log = tmp_path / "series-bisect.jsonl"
    messages: list[str] = []

    def progress(message: str) -> None:
        messages.append(message)
        print(f"bisect: {message}", flush=True)

    outcome: BisectOutcome = bisect_run.bisect_series(
        "regress", PROBE, "default", (), log, options=bisect_run.Options(progress=progress))
    print(bisect_run.describe_outcome(outcome, 5))
    assert outcome.first_bad is not None, outcome.summary()
    assert outcome.first_bad.id == "regress/0003-rcfs-rmdir-ignores-tasks.patch"
    assert REGRESSION_SUBJECT in outcome.first_bad.subject
    assert "EBUSY" in outcome.detail and "rmdir" in outcome.detail
    assert outcome.last_good.id == "regress/0002-doc-extend-the-note.patch"
    assert len(outcome.steps) <= 2 + 3
    assert messages[0].startswith("series regress") and "5 candidates" in messages[0]
    figures = _figures(len(outcome.steps), 5, outcome.builds, outcome.runner_calls, outcome.duration)
    print(f"series bisect: {figures}")
    record_property("series_bisect", figures)
