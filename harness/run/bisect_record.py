"""What a bisect step is and how it is recorded: candidates, verdicts, and the JSON-lines log.

Every step is appended to the log as soon as it is known (candidate, verdict,
a truncated copy of the detail, duration), synced to disk, so an interrupted
bisect loses nothing.  :func:`replay` reads the steps back;
:func:`recorded_verdicts` gives the engine (:mod:`harness.run.bisect`) the
verdicts it may reuse instead of running again:

* only for the same candidate identity (the commit sha, or the digest of the
  patch prefix: editing a patch invalidates it);
* only from a log recorded for the same context (test node, config...);
* never a verdict caused by infrastructure errors: those are tried again.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.results import truncate

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


def step_record(step: StepResult) -> dict[str, Any]:
    """The log line of one step."""
    c = step.candidate
    return {
        "event": "step",
        "index": c.index,
        "id": c.id,
        "subject": c.subject,
        "prefix": c.prefix,
        "digest": c.digest,
        "verdict": step.verdict.value,
        "detail": truncate(step.detail, DETAIL_LIMIT),
        "duration": round(step.duration, 3),
        "built": step.built,
        "infra": step.infra,
        "replayed": step.replayed,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log; a last line cut short by an interruption is ignored."""
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
    return [_step_from_record(log_path, r) for r in read_log(log_path) if r["event"] == "step"]


def recorded_verdicts(path: Path, context: Mapping[str, str] | None) -> dict[str, StepResult]:
    """The reusable verdicts of a log, by candidate identity (the last one wins)."""
    if not path.exists():
        return {}
    records = read_log(path)
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


class Log:
    """Appends records to a JSON-lines file (nothing when ``path`` is None), synced at once."""

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


def same_file(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
