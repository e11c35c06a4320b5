"""The bisect engine: pure logic that picks which candidate to test next.

:func:`bisect` works over an ordered list of :class:`Candidate` objects,
oldest first: index 0 is the known-good endpoint, the last one the known-bad
endpoint.  It never builds or boots anything itself: a *runner*
(``Callable[[Candidate], StepResult]``, supplied by the caller) does "build +
boot + run one pytest node" and returns a :class:`Verdict`:

* ``GOOD`` / ``BAD``: the test passed / failed;
* ``SKIP``: the candidate cannot be tested (build failed, patch does not
  apply), like ``git bisect skip``; a runner raising :class:`StageError` is
  taken as a ``SKIP``;
* ``INFRA``: the machinery failed (VM or SSH died, a tool is missing, a
  timeout); a runner raising :class:`InfraError` (``ToolMissing`` and
  ``HarnessTimeout`` included) is taken as an ``INFRA``.  The candidate is
  retried once; a second ``INFRA`` makes it a ``SKIP``.  A full disk
  (:class:`DiskFull`) stops the bisect: no step could succeed.

Both endpoints are verified first, then the range is halved; a skipped
candidate is replaced by the untested candidate nearest the midpoint, and no
candidate is ever run twice (apart from the one ``INFRA`` retry).  With ``N``
candidates that is at most ``ceil(log2 N) + 2`` runner calls, plus skips and
retries.  When skipped candidates sit right before the first bad one the
answer is ambiguous and :class:`BisectOutcome` lists every candidate that
may be it.

Every step goes to a JSON-lines log, and ``bisect(..., replay_from=log)``
reuses its recorded verdicts instead of calling the runner, so an
interrupted bisect resumes where it stopped (see
:mod:`harness.run.bisect_record`).  The candidates come from
:mod:`harness.run.bisect_candidates` (a patch series, or a git history).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import DiskFull, InfraError, InputError, StageError
from harness.run.bisect_record import (
    Candidate,
    Log,
    StepResult,
    Verdict,
    recorded_verdicts,
    replay,
    same_file,
    step_record,
)

__all__ = ["BisectOutcome", "Candidate", "Progress", "Runner", "StepResult", "Verdict", "bisect",
           "estimate_steps", "replay"]


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


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the engine ------------------------------------------------------------------


def estimate_steps(count: int) -> int:
    """The announced number of steps for ``count`` candidates: ceil(log2 N) + 2."""
    return math.ceil(math.log2(max(count, 2))) + 2


class _Session:
    def __init__(self, candidates: Sequence[Candidate], runner: Runner, log: Log, progress: Progress,
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
            self.log.write(step_record(step))

    def _call(self, candidate: Candidate) -> StepResult:
        started = time.monotonic()
        try:
            result = self.runner(candidate)
        except DiskFull:
            raise  # no candidate can be built or run: stop, do not skip them all
        except InfraError as exc:  # ToolMissing and HarnessTimeout too
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
    recorded = recorded_verdicts(replay_from, context) if replay_from is not None else {}
    writer = Log(log)
    writer.write({
        "event": "start",
        "candidates": len(candidates),
        "good": candidates[0].id,
        "bad": candidates[-1].id,
        "context": dict(context or {}),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    session = _Session(candidates, runner, writer, progress or _print_progress, recorded,
                       relog_replayed=not same_file(log, replay_from))

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
