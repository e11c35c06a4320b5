"""Bisect: which patch of a series, or which kernel commit, broke a test.

The engine (:func:`bisect`) is pure logic over an ordered list of
:class:`Candidate` objects, oldest first: index 0 is the known-good endpoint, the
last one the known-bad endpoint.  It never builds or boots anything itself: a
*runner* (``Callable[[Candidate], StepResult]``, supplied by the caller) does
"build + boot + run one pytest node" and returns a :class:`Verdict`:

* ``GOOD`` / ``BAD``: the test passed / failed;
* ``SKIP``: the candidate cannot be tested (build failed, patch does not
  apply), like ``git bisect skip``; a runner raising :class:`StageError` is
  taken as a ``SKIP``;
* ``INFRA``: the machinery failed (VM or SSH died); a runner raising
  :class:`InfraError` is taken as an ``INFRA``.  The candidate is retried
  once; a second ``INFRA`` makes it a ``SKIP``.

Both endpoints are verified first, then the range is halved; a skipped
candidate is replaced by the untested candidate nearest the midpoint, and no
candidate is ever run twice (apart from the one ``INFRA`` retry).  With ``N``
candidates that is at most ``ceil(log2 N) + 2`` runner calls, plus skips and
retries.  When skipped candidates sit right before the first bad one the
answer is ambiguous and :class:`BisectOutcome` lists every candidate that
may be it.

Every step is appended to a JSON-lines log as soon as it is known (candidate,
verdict, excerpt of the detail, duration).  :func:`replay` reads it back, and
``bisect(..., replay_from=log)`` reuses its recorded verdicts instead of
calling the runner, so an interrupted bisect resumes where it stopped.  A
verdict is reused only for the same candidate identity (the commit sha, or
the digest of the patch prefix: editing a patch invalidates it) and, when a
``context`` (test node, config...) is given, only from a log recorded for the
same context.  Skips caused by infrastructure errors are not reused: they
are tried again.

Candidate providers:

* :func:`series_candidates`: index ``i`` = the first ``i`` patches of the
  series' *own* patches on top of its whole base chain (index 0 = the base
  chain only).  ``Candidate.prefix`` is the count to give ``Series.prefix()``
  (:func:`series_prefix`).
* :func:`git_candidates`: ``good`` followed by
  ``git rev-list --reverse --first-parent good..bad``, with their subjects.

Git trees: :func:`git_worktree` exports a commit with ``git archive`` into a
temporary directory inside the cache and removes it afterwards.  It was
chosen over the alternatives because:

* ``git worktree add`` writes into the user's repository (``.git/worktrees``
  metadata, left behind stale when the harness is killed); ``git archive`` only
  reads the repository, and also works on a bare one;
* ``source.resolve("PATH@SHA")`` refuses most commits of a bisect range (its
  version check wants exactly ``2.6.20``, not ``2.6.20-rc3``), and would keep
  one full pristine tree per step in the cache, each with its own build entry,
  i.e. a full kernel build per step;
* the directory is inside the cache, so the build stage's hard-linked copy
  (``cp -al``) works (hard links cannot cross file systems, a ``/tmp`` tree
  would fail there).

An export takes seconds next to the minutes of a build.  File times are set
to the export time (``git archive`` stamps every file with the commit time):
together with :func:`git_source`, which gives every commit of one repository
the same ``Source.id`` (so every step reuses one build entry, whose inputs
still record the full sha as the origin, so no stale build is ever reused as
a cache hit), the build stage's content-comparing tree sync makes each step
an incremental ``make`` that recompiles exactly the files that differ, also
when the bisect moves back to an older commit.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import archive, cache, proc
from harness.errors import InfraError, InputError, StageError
from harness.kernel.patches import Series
from harness.kernel.source import Source, tree_version

DETAIL_LIMIT = 4000  # characters of a step's detail kept in the log


class Verdict(enum.Enum):
    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"
    INFRA = "infra"


@dataclass(frozen=True)
class Candidate:
    """One point of the ordered history being bisected."""

    index: int
    id: str  # patch "series/file" or a full commit sha
    subject: str  # the patch Subject or the commit subject
    prefix: int | None = None  # series: the count to pass to Series.prefix()
    digest: str = ""  # identity of the inputs; a recorded verdict is reused only when it matches
    label: str = ""  # how messages name an endpoint ("--good v2.6.19 (1234abcd5678)")

    @property
    def short_id(self) -> str:
        if len(self.id) == 40 and all(ch in "0123456789abcdef" for ch in self.id):
            return self.id[:12]
        return self.id

    @property
    def identity(self) -> str:
        return self.digest or self.id

    def describe(self) -> str:
        return f"{self.short_id} {self.subject}".rstrip()


@dataclass(frozen=True)
class StepResult:
    candidate: Candidate
    verdict: Verdict
    detail: str = ""  # the failing test's output, the build error...
    duration: float = 0.0  # seconds
    built: bool = False  # the runner had to build (not a cache hit)
    replayed: bool = False  # taken from a log instead of running
    infra: bool = False  # a SKIP made of two infrastructure errors


Runner = Callable[[Candidate], StepResult]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BisectOutcome:
    first_bad: Candidate | None  # None when skips leave several possibilities
    detail: str  # the first bad candidate's failure output
    possible: tuple[Candidate, ...]  # candidates that may be the first bad one (just first_bad if known)
    last_good: Candidate
    steps: tuple[StepResult, ...] = field(default_factory=tuple)
    runner_calls: int = 0
    builds: int = 0
    duration: float = 0.0

    @property
    def ambiguous(self) -> bool:
        return self.first_bad is None

    def summary(self) -> str:
        tail = (f"({len(self.steps)} steps, {self.runner_calls} runs, {self.builds} builds, "
                f"{self.duration:.0f}s)")
        if self.first_bad is not None:
            head = f"first bad: {self.first_bad.describe()} {tail}"
            return head + ("\n" + self.detail.rstrip() if self.detail.strip() else "")
        lines = [f"skipped candidates hide the answer; the first bad one is one of: {tail}"]
        for c in self.possible:
            skipped = any(s.candidate.index == c.index and s.verdict is Verdict.SKIP for s in self.steps)
            lines.append(f"  {c.describe()}{'  (skipped)' if skipped else ''}")
        return "\n".join(lines)


def excerpt(text: str, limit: int = DETAIL_LIMIT) -> str:
    """``text`` cut to about ``limit`` characters, keeping its beginning and its end."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the log ---------------------------------------------------------------------


def _step_record(step: StepResult) -> dict[str, Any]:
    c = step.candidate
    return {
        "event": "step",
        "index": c.index,
        "id": c.id,
        "subject": c.subject,
        "prefix": c.prefix,
        "digest": c.digest,
        "verdict": step.verdict.value,
        "detail": excerpt(step.detail),
        "duration": round(step.duration, 3),
        "built": step.built,
        "infra": step.infra,
        "replayed": step.replayed,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _read_log(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"bisect log {path}: cannot read it ({exc.strerror})") from None
    records: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "event" not in record:
                raise ValueError("not a log record")
        except ValueError:
            if lineno == len(lines):  # a line cut short by an interruption
                break
            raise InputError(f"bisect log {path}:{lineno}: not a JSON log record: {line[:80]!r}") from None
        records.append(record)
    return records


def _step_from_record(path: Path, record: dict[str, Any]) -> StepResult:
    try:
        candidate = Candidate(
            index=int(record["index"]),
            id=str(record["id"]),
            subject=str(record.get("subject", "")),
            prefix=None if record.get("prefix") is None else int(record["prefix"]),
            digest=str(record.get("digest", "")),
        )
        return StepResult(
            candidate=candidate,
            verdict=Verdict(record["verdict"]),
            detail=str(record.get("detail", "")),
            duration=float(record.get("duration", 0.0)),
            built=bool(record.get("built", False)),
            replayed=bool(record.get("replayed", False)),
            infra=bool(record.get("infra", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"bisect log {path}: malformed step record {record!r} ({exc})") from None


def replay(log_path: Path) -> list[StepResult]:
    """Every step recorded in a bisect log, in order (INFRA attempts included)."""
    return [_step_from_record(log_path, r) for r in _read_log(log_path) if r["event"] == "step"]


def _recorded_verdicts(path: Path, context: Mapping[str, str] | None) -> dict[str, StepResult]:
    """The reusable verdicts of a log, by candidate identity (the last one wins)."""
    if not path.exists():
        return {}
    records = _read_log(path)
    starts = [r for r in records if r["event"] == "start"]
    if context is not None and starts:
        recorded = starts[-1].get("context") or {}
        if recorded != dict(context):
            raise InputError(
                f"bisect log {path} was recorded for {_format_context(recorded)}, not for "
                f"{_format_context(context)}; give another log file or delete this one"
            )
    found: dict[str, StepResult] = {}
    for record in records:
        if record["event"] != "step":
            continue
        step = _step_from_record(path, record)
        if step.verdict is Verdict.INFRA or step.infra:
            continue  # infrastructure trouble is worth another try
        found[step.candidate.identity] = step
    return found


def _format_context(context: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(context.items())) or "no context"


class _Log:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _same_file(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


# --- the engine ------------------------------------------------------------------


def estimate_steps(count: int) -> int:
    """The announced number of steps for ``count`` candidates: ceil(log2 N) + 2."""
    return math.ceil(math.log2(max(count, 2))) + 2


class _Session:
    def __init__(self, candidates: Sequence[Candidate], runner: Runner, log: _Log, progress: Progress,
                 recorded: dict[str, StepResult], relog_replayed: bool) -> None:
        self.candidates = candidates
        self.runner = runner
        self.log = log
        self.progress = progress
        self.recorded = recorded
        self.relog_replayed = relog_replayed
        self.estimate = estimate_steps(len(candidates))
        self.start = time.monotonic()
        self.steps: list[StepResult] = []
        self.final: dict[int, StepResult] = {}
        self.calls = 0
        self.builds = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _record(self, step: StepResult) -> None:
        self.steps.append(step)
        if not step.replayed or self.relog_replayed:
            self.log.write(_step_record(step))

    def _call(self, candidate: Candidate) -> StepResult:
        started = time.monotonic()
        try:
            result = self.runner(candidate)
        except InfraError as exc:
            result = StepResult(candidate, Verdict.INFRA, str(exc))
        except StageError as exc:
            result = StepResult(candidate, Verdict.SKIP, str(exc))
        finally:
            self.calls += 1
        if result.candidate != candidate:
            result = replace(result, candidate=candidate)
        if result.duration <= 0:
            result = replace(result, duration=time.monotonic() - started)
        if result.built:
            self.builds += 1
        return result

    def test(self, candidate: Candidate) -> StepResult:
        assert candidate.index not in self.final, "a candidate is never tested twice"
        number = len(self.final) + 1
        reuse = self.recorded.get(candidate.identity)
        if reuse is not None:
            step = replace(reuse, candidate=candidate, replayed=True)
            self.progress(f"step {number} of about {self.estimate}: {candidate.describe()}: "
                          f"{step.verdict.name} (recorded in the log)")
        else:
            self.progress(f"step {number} of about {self.estimate}: testing {candidate.describe()} "
                          f"(elapsed {self.elapsed():.0f}s)")
            step = self._call(candidate)
            if step.verdict is Verdict.INFRA:
                self._record(step)
                self.progress(f"  infrastructure error, retrying once: {_first_line(step.detail)}")
                step = self._call(candidate)
                if step.verdict is Verdict.INFRA:
                    step = replace(step, verdict=Verdict.SKIP, infra=True,
                                   detail=f"infrastructure error twice: {step.detail}")
            how = "cache hit" if not step.built else "built"
            self.progress(f"  {step.verdict.name} in {step.duration:.0f}s ({how})"
                          + (f": {_first_line(step.detail)}" if step.verdict is Verdict.SKIP else ""))
        self._record(step)
        self.final[candidate.index] = step
        return step


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else "(no detail)"


def _endpoint_name(candidate: Candidate, which: str) -> str:
    return candidate.label or f"the {which} endpoint {candidate.describe()}"


def _check_endpoint(candidate: Candidate, step: StepResult, want: Verdict) -> None:
    if step.verdict is want:
        return
    which = "good" if want is Verdict.GOOD else "bad"
    name = _endpoint_name(candidate, which)
    detail = step.detail.strip()
    if step.verdict is Verdict.SKIP:
        raise StageError(f"{name} cannot be tested, so there is nothing to bisect: "
                         f"{detail or 'skipped'}")
    if want is Verdict.GOOD:
        raise InputError(f"{name} does not pass: {detail or 'the test fails'}")
    raise InputError(f"{name} does not fail: {detail or 'the test passes'}")


def bisect(
    candidates: Sequence[Candidate],
    runner: Runner,
    *,
    log: Path | None = None,
    progress: Progress | None = None,
    replay_from: Path | None = None,
    context: Mapping[str, str] | None = None,
) -> BisectOutcome:
    """Find the first candidate whose verdict is BAD.

    ``candidates`` are ordered oldest to newest; the first must be GOOD and
    the last BAD (both are checked first).  ``log`` receives one JSON line per
    step; ``replay_from`` (may be the same file, may not exist yet) supplies
    recorded verdicts that are reused instead of running.  ``context`` (e.g.
    test and config) is written to the log and must match a replayed log's.
    """
    if len(candidates) < 2:
        raise InputError("nothing to bisect: need a good and a bad candidate, "
                         f"got {len(candidates)} candidate(s)")
    if [c.index for c in candidates] != list(range(len(candidates))):
        raise ValueError("candidate indices must be 0, 1, 2... in order")
    recorded = _recorded_verdicts(replay_from, context) if replay_from is not None else {}
    writer = _Log(log)
    writer.write({
        "event": "start",
        "candidates": len(candidates),
        "good": candidates[0].id,
        "bad": candidates[-1].id,
        "context": dict(context or {}),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    session = _Session(candidates, runner, writer, progress or _print_progress, recorded,
                       relog_replayed=not _same_file(log, replay_from))

    _check_endpoint(candidates[0], session.test(candidates[0]), Verdict.GOOD)
    _check_endpoint(candidates[-1], session.test(candidates[-1]), Verdict.BAD)

    good, bad = 0, len(candidates) - 1  # highest GOOD index, lowest BAD index
    while True:
        untested = [i for i in range(good + 1, bad) if i not in session.final]
        if not untested:
            break
        middle = (good + bad) // 2
        pick = min(untested, key=lambda i: (abs(i - middle), i))
        verdict = session.test(candidates[pick]).verdict
        if verdict is Verdict.GOOD:
            good = pick
        elif verdict is Verdict.BAD:
            bad = pick

    possible = tuple(candidates[good + 1: bad + 1])
    first_bad = candidates[bad] if len(possible) == 1 else None
    outcome = BisectOutcome(
        first_bad=first_bad,
        detail=session.final[bad].detail if first_bad is not None else "",
        possible=possible,
        last_good=candidates[good],
        steps=tuple(session.steps),
        runner_calls=session.calls,
        builds=session.builds,
        duration=session.elapsed(),
    )
    writer.write({
        "event": "end",
        "first_bad": first_bad.id if first_bad is not None else None,
        "possible": [c.id for c in possible],
        "runner_calls": outcome.runner_calls,
        "builds": outcome.builds,
        "duration": round(outcome.duration, 3),
    })
    return outcome


# --- candidates: a patch series --------------------------------------------------


def series_candidates(series: Series) -> list[Candidate]:
    """Candidate ``i`` = the base chain plus the first ``i`` of the series' own patches."""
    own = series.own_patches()
    base_count = len(series.patches) - len(own)
    if series.patches[base_count:] != own:
        raise InputError(f"series {series.name!r}: its own patches do not come after its base chain")
    bases = ", ".join(series.chain[:-1]) or "none, pristine source"
    candidates = [Candidate(
        index=0,
        id=f"{series.name}/(none)",
        subject=f"no patch of {series.name} (base chain: {bases})",
        prefix=base_count,
        digest=series.prefix(base_count).digest(),
        label=f"the empty prefix of {series.name} (base chain: {bases})",
    )]
    for i, patch in enumerate(own, 1):
        candidates.append(Candidate(
            index=i,
            id=f"{patch.series}/{patch.name}",
            subject=patch.subject,
            prefix=base_count + i,
            digest=series.prefix(base_count + i).digest(),
            label=f"the full series {series.name}" if i == len(own) else "",
        ))
    return candidates


def series_prefix(series: Series, candidate: Candidate) -> Series:
    """The series to build for ``candidate`` (from :func:`series_candidates`)."""
    if candidate.prefix is None:
        raise ValueError(f"candidate {candidate.id} is not a series candidate")
    return series.prefix(candidate.prefix)


# --- candidates: git history -----------------------------------------------------


def _git(repo: Path, *args: str, check: bool = True) -> proc.Completed:
    return proc.run(["git", "-C", repo, *args], check=check, what=f"git {args[0]}")


def _check_repo(repo: Path) -> None:
    if not repo.is_dir():
        raise InputError(f"--git {repo}: no such directory; expected a git repository")
    if not _git(repo, "rev-parse", "--git-dir", check=False).ok:
        raise InputError(f"--git {repo}: not a git repository")


def resolve_commit(repo: Path, ref: str, option: str = "REF") -> str:
    """The full sha of commit ``ref`` in ``repo``; InputError if it names no commit."""
    if not ref or ref.startswith("-") or any(ch.isspace() for ch in ref):
        raise InputError(f"{option} {ref!r} is not a commit in {repo}")
    result = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not result.ok:
        raise InputError(f"{option} {ref!r} is not a commit in {repo}")
    return result.stdout.strip()


def git_candidates(repo: Path, good: str, bad: str) -> list[Candidate]:
    """``good``, then each first-parent commit of ``good..bad``, oldest first."""
    _check_repo(repo)
    good_sha = resolve_commit(repo, good, "--good REF")
    bad_sha = resolve_commit(repo, bad, "--bad REF")
    good_name, bad_name = f"--good {good} ({good_sha[:12]})", f"--bad {bad} ({bad_sha[:12]})"
    if good_sha == bad_sha:
        raise InputError(f"{good_name} and {bad_name} are the same commit: nothing to bisect")
    ancestor = _git(repo, "merge-base", "--is-ancestor", good_sha, bad_sha, check=False)
    if ancestor.returncode not in (0, 1):
        raise StageError(f"git merge-base failed in {repo}: {ancestor.stderr.strip()}")
    if ancestor.returncode == 1:
        swapped = _git(repo, "merge-base", "--is-ancestor", bad_sha, good_sha, check=False).ok
        hint = " (it is the other way round: swap --good and --bad?)" if swapped else ""
        raise InputError(f"{good_name} is not an ancestor of {bad_name}{hint}")
    listing = _git(repo, "log", "--no-show-signature", "--first-parent", "--reverse",
                   "--format=%H%x1f%P%x1f%s", f"{good_sha}..{bad_sha}")
    rows = [line.split("\x1f", 2) for line in listing.stdout.splitlines() if line.strip()]
    if not rows or rows[-1][0] != bad_sha:
        raise StageError(f"git log {good_sha[:12]}..{bad_sha[:12]} in {repo} gave an unexpected listing")
    first_parent = rows[0][1].split()[0] if rows[0][1].split() else ""
    if first_parent != good_sha:
        raise InputError(
            f"{good_name} is not on the first-parent history of {bad_name} (it was merged in from "
            f"a side branch); give a --good on that history, e.g. {first_parent[:12] or 'a root commit'}"
        )
    good_subject = _git(repo, "log", "--no-show-signature", "-1", "--format=%s", good_sha).stdout.strip()
    candidates = [Candidate(0, good_sha, good_subject, digest=good_sha, label=good_name)]
    for i, (sha, _parents, subject) in enumerate(rows, 1):
        label = bad_name if i == len(rows) else ""
        candidates.append(Candidate(i, sha, subject, digest=sha, label=label))
    return candidates


def _worktrees_dir() -> Path:
    return cache.subdir("worktrees")


def _remove_stale_worktrees(parent: Path) -> None:
    """Remove trees left by harness processes that were killed."""
    for entry in parent.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            cache.remove_tree(entry)
        except PermissionError:
            pass


def _touch_all(tree: Path, when: float) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


@contextlib.contextmanager
def git_worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A read-only tree of ``commit``, exported from ``repo`` without touching it.

    The tree lives in ``$HARNESS_CACHE/worktrees/`` (same file system as the
    build entries, for hard links) and is removed when the block ends.  Every
    file carries the export time, not the commit time (see the module
    docstring).
    """
    _check_repo(repo)
    sha = resolve_commit(repo, commit, "commit")
    parent = _worktrees_dir()
    _remove_stale_worktrees(parent)
    holder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{sha[:12]}-", dir=parent))
    try:
        tar = holder / "export.tar"
        _git(repo, "archive", "--format=tar", "-o", str(tar), sha)
        tree = holder / "tree"
        archive.safe_extract_tar(tar, tree)
        tar.unlink()
        _touch_all(tree, time.time())
        cache.make_read_only(tree)
        yield tree
    finally:
        cache.remove_tree(holder)


@contextlib.contextmanager
def git_source(repo: Path, commit: str) -> Iterator[Source]:
    """A :class:`Source` for ``commit``, to build one git bisect step.

    Every commit of ``repo`` gets the same ``Source.id``, so all steps share one
    build entry and rebuild incrementally; the origin names the full sha, and
    it is part of the build inputs, so a build is a cache hit only for the
    same commit.
    """
    sha = resolve_commit(repo, commit, "commit")
    with git_worktree(repo, sha) as tree:
        yield Source(
            id=f"bisect-{cache.digest(str(repo.resolve()))}",
            tree=tree,
            origin=f"{repo.resolve()}@{sha}",
            version=tree_version(tree) or "unknown",
        )
