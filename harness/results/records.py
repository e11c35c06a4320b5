"""The records a results directory holds (KCIDB-shaped), the Summary of them, and their JSON form.

* :class:`Checkout` -- what was built: the source id and a patch series with
  the sha256 of each patch (KCIDB's checkout);
* :class:`BuildRecord` -- one kernel built; ``kernel`` is its label,
  ``<series>/<config>`` plus ``[SYMBOL=VALUE,...]`` for ``--set`` overrides;
* :class:`BootRecord` -- one boot of a build in QEMU;
* :class:`StageRecord` -- a stage other than build and boot (the guest image)
  that failed for a kernel, so that its tests did not run;
* :class:`TestRecord` -- one pytest test of a build.  ``path`` is the pytest
  node id.  ``ERROR`` means the harness failed (a fixture error, or an error
  whose kind is in :data:`ERROR_KINDS`), never a verdict; ``MISS`` means the
  test did not run (``not_run`` says why: a failed stage, an interrupt).
  ``xfail`` is ``"xfail"`` for an expected failure (status SKIP) or
  ``"xpass"`` for a strict xfail that passed (status FAIL).

``summary.json`` carries ``version: {major, minor}``; a reader refuses another
major version and ignores unknown keys.  ``interrupted`` names the signal
(``SIGINT``, ``SIGTERM``) that stopped the run, when one did: the results are
then partial.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from harness.errors import (
    ExitCode,
    HarnessTimeout,
    InfraError,
    InputError,
    Interrupted,
    StageError,
)

ORIGIN = "harness"
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 1  # 1.1: MISS status, stages, interrupted, build overrides/cached, boot resumed, not_run

Status = Literal["PASS", "FAIL", "SKIP", "ERROR", "MISS"]
STATUSES: tuple[Status, ...] = ("MISS", "PASS", "SKIP", "FAIL", "ERROR")
"""By severity: merging duplicates keeps the later one in this order (MISS, no result, yields to any)."""
XFail = Literal["xfail", "xpass"]

ERROR_KINDS = frozenset({InfraError.kind, HarnessTimeout.kind, InputError.kind, StageError.kind,
                         Interrupted.kind})
"""Kinds (``harness.errors`` class ``.kind``) of an error raised in a test that mean the harness
failed, not the kernel: such a test is an ERROR.  A guest crash or a failed guest command is a verdict."""

SUMMARY_JSON = "summary.json"
JUNIT_XML = "junit.xml"
INDEX_HTML = "index.html"
LOGS = "logs"


def build_id_for(kernel: str) -> str:
    """The id of the build of kernel ``kernel`` (its label)."""
    return f"{ORIGIN}:{kernel}"


def record_id(build_id: str, path: str) -> str:
    """A test record's id: its build id and node id."""
    return f"{build_id}:{path}"


@dataclass
class PatchFile:
    name: str
    sha256: str


@dataclass
class Checkout:
    """The tree that was built (KCIDB checkout): a pristine source plus a series."""

    id: str
    source_id: str
    series: str
    tree_name: str = "linux-2.6.20"
    patches: list[PatchFile] = field(default_factory=list)
    git_commit_hash: str | None = None
    origin: str = ORIGIN
    start_time: str | None = None

    @property
    def patchset_hash(self) -> str:
        """sha256 over the patch hashes in order ("" for no patches), like KCIDB's."""
        if not self.patches:
            return ""
        return hashlib.sha256("".join(p.sha256 + "\n" for p in self.patches).encode()).hexdigest()


@dataclass
class BuildRecord:
    """One kernel build.  ``kernel`` is its label; status MISS: never attempted (interrupted run)."""

    id: str
    series: str
    config: str
    status: Status
    duration: float | None = None
    log_path: str | None = None
    bzimage_path: str | None = None
    warnings: int = 0
    checkout_id: str | None = None
    architecture: str = "i386"
    compiler: str | None = None
    message: str | None = None
    start_time: str | None = None
    origin: str = ORIGIN
    kernel: str = ""
    overrides: list[str] = field(default_factory=list)
    cached: bool = False

    def __post_init__(self) -> None:
        if not self.kernel:
            self.kernel = f"{self.series}/{self.config}"

    @classmethod
    def new(cls, series: str, config: str, status: Status, *, kernel: str = "", **kw: Any) -> BuildRecord:
        """A record whose id is :func:`build_id_for` its label (``kernel``, default ``<series>/<config>``)."""
        label = kernel or f"{series}/{config}"
        return cls(id=build_id_for(label), series=series, config=config, status=status, kernel=label, **kw)


@dataclass
class BootRecord:
    """One boot of a build in QEMU; ``message`` says why it failed (panic, timeout...)."""

    id: str
    build_id: str
    status: Status
    duration: float | None = None
    console_log_path: str | None = None
    message: str | None = None
    start_time: str | None = None
    origin: str = ORIGIN
    resumed: bool = False  # resumed from the kernel's saved boot rather than booted


@dataclass
class StageRecord:
    """A stage of a kernel other than build and boot (``stage``: image...) that did not pass.

    ``kind`` is the error's kind (``harness.errors`` class ``.kind``).
    """

    id: str
    build_id: str
    stage: str
    status: Status
    message: str | None = None
    kind: str | None = None
    duration: float | None = None
    log_path: str | None = None
    start_time: str | None = None
    origin: str = ORIGIN


@dataclass
class TestRecord:
    """One test of a build, from pytest in the guest."""

    __test__ = False  # not a pytest test class

    id: str
    build_id: str
    path: str
    status: Status
    duration: float | None = None
    message: str | None = None
    details: str | None = None
    console_excerpt: str | None = None
    kernel_log_excerpt: str | None = None
    xfail: XFail | None = None
    start_time: str | None = None
    origin: str = ORIGIN
    not_run: str | None = None  # why the harness did not run it (a failed stage, an interrupt)

    @property
    def label(self) -> str:
        """What a report shows: PASS, FAIL, ERROR, SKIP, MISS, XFAIL or XPASS."""
        if self.xfail == "xfail" and self.status == "SKIP":
            return "XFAIL"
        if self.xfail == "xpass":
            return "XPASS"
        return self.status


@dataclass
class Summary:
    """Everything a results directory knows (``summary.json``)."""

    checkouts: list[Checkout] = field(default_factory=list)
    builds: list[BuildRecord] = field(default_factory=list)
    boots: list[BootRecord] = field(default_factory=list)
    tests: list[TestRecord] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    interrupted: str | None = None  # the signal's name (SIGINT, SIGTERM) when the run was stopped
    created: str = field(default_factory=lambda: now())
    origin: str = ORIGIN

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": {"major": SCHEMA_MAJOR, "minor": SCHEMA_MINOR},
            "origin": self.origin,
            "created": self.created,
            "interrupted": self.interrupted,
            "checkouts": [dataclasses.asdict(c) for c in self.checkouts],
            "builds": [dataclasses.asdict(b) for b in self.builds],
            "boots": [dataclasses.asdict(b) for b in self.boots],
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "tests": [dataclasses.asdict(t) for t in self.tests],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "summary") -> Summary:
        version = data.get("version")
        if not isinstance(version, Mapping) or version.get("major") != SCHEMA_MAJOR:
            raise InputError(
                f"{where}: results schema version {version!r} is not supported "
                f"(this harness reads major version {SCHEMA_MAJOR})"
            )
        try:
            return cls(
                checkouts=[checkout_from(d) for d in list_of(data, "checkouts")],
                builds=[record_from(BuildRecord, d) for d in list_of(data, "builds")],
                boots=[record_from(BootRecord, d) for d in list_of(data, "boots")],
                tests=[record_from(TestRecord, d) for d in list_of(data, "tests")],
                stages=[record_from(StageRecord, d) for d in list_of(data, "stages")],
                interrupted=check_signal(data.get("interrupted")),
                created=str(data.get("created", "")),
                origin=str(data.get("origin", ORIGIN)),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{where}: malformed results: {exc}") from exc

    @classmethod
    def from_json(cls, text: str, *, where: str = "summary") -> Summary:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object")
        return cls.from_dict(data, where=where)

    def build(self, build_id: str) -> BuildRecord | None:
        return next((b for b in self.builds if b.id == build_id), None)

    def kernel_ids(self) -> list[str]:
        """Build ids in order: builds first, then builds only boots, stages or tests mention."""
        ids = [b.id for b in self.builds]
        for build_id in [*(b.build_id for b in self.boots), *(s.build_id for s in self.stages),
                         *(t.build_id for t in self.tests)]:
            if build_id not in ids:
                ids.append(build_id)
        return ids

    def label_of(self, build_id: str) -> str:
        """The kernel label of ``build_id`` (the id itself when there is no build record)."""
        b = self.build(build_id)
        return b.kernel if b else build_id

    def counts(self) -> dict[str, int]:
        """Test counts by label (PASS, FAIL, ERROR, SKIP, MISS, XFAIL, XPASS) plus stage tallies."""
        out = {k: 0 for k in ("tests", "PASS", "FAIL", "ERROR", "SKIP", "MISS", "XFAIL", "XPASS")}
        for t in self.tests:
            out["tests"] += 1
            out[t.label] += 1
        out["builds"] = len(self.builds)
        out["builds_failed"] = sum(b.status in ("FAIL", "ERROR") for b in self.builds)
        out["builds_not_run"] = sum(b.status == "MISS" for b in self.builds)
        out["boots"] = len(self.boots)
        out["boots_failed"] = sum(b.status != "PASS" for b in self.boots)
        out["stages_failed"] = sum(s.status != "PASS" for s in self.stages)
        return out


def load_summary(path: Path) -> Summary:
    """Read ``summary.json`` from a results directory (or the file itself)."""
    file = path / SUMMARY_JSON if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{file}: cannot read results summary ({exc.strerror})") from exc
    return Summary.from_json(text, where=str(file))


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def list_of(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise TypeError(f"{key!r} must be a list of objects")
    return value


def check_status(value: object) -> Status:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r} (expected one of {', '.join(STATUSES)})")
    return value


def check_signal(value: object) -> str | None:
    """``None`` or the name of a signal (SIGINT...)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in signal.Signals.__members__:
        raise ValueError(f"'interrupted' must be a signal name such as SIGINT, not {value!r}")
    return value


_R = TypeVar("_R", BuildRecord, BootRecord, TestRecord, StageRecord)


def record_from(cls: type[_R], data: Mapping[str, Any]) -> _R:
    """A record of ``cls`` from its JSON object (unknown keys ignored, status and xfail checked)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["status"] = check_status(kwargs.get("status"))
    if kwargs.get("xfail") not in (None, "xfail", "xpass"):
        raise ValueError(f"unknown xfail value {kwargs['xfail']!r}")
    return cls(**kwargs)


def checkout_from(data: Mapping[str, Any]) -> Checkout:
    names = {f.name for f in dataclasses.fields(Checkout)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["patches"] = [PatchFile(name=str(p["name"]), sha256=str(p["sha256"]))
                         for p in kwargs.get("patches", [])]
    return Checkout(**kwargs)


def worst(a: Status, b: Status) -> Status:
    return a if STATUSES.index(a) >= STATUSES.index(b) else b


def exit_code(summary: Summary) -> int:
    """128 + the signal of an interrupted run; 2 when something is not a verdict: a build, boot
    or stage that did not pass, a test ERROR, or a test without a result (MISS); 1 a test
    FAILed (a strict xpass is a failure); else 0."""
    if summary.interrupted:
        return Interrupted(signal.Signals[summary.interrupted]).exit_code
    if (any(t.status in ("ERROR", "MISS") for t in summary.tests)
            or any(b.status != "PASS" for b in summary.builds)
            or any(b.status != "PASS" for b in summary.boots)
            or any(s.status != "PASS" for s in summary.stages)):
        return ExitCode.ERROR
    if any(t.status == "FAIL" for t in summary.tests):
        return ExitCode.FAILED
    return ExitCode.OK
