"""What one pytest session hands to the report (``records.json``), as dataclasses written and read alike.

The plugin (:mod:`harness.plugin`) fills a :class:`SessionRecords` as the
session goes -- one :class:`KernelRun` per kernel it prepared, with its
build, boots and failed stages as the very records of the results directory
-- and writes it at the end; ``harness test`` (:mod:`harness.run.matrix`)
reads it back with :meth:`SessionRecords.load`.  ``tests`` maps every test
the session selected to the label of the kernel it runs on, so each test is
reported on its own kernel, and a test without a JUnit result (interrupted,
or pytest died) is reported as not run (MISS) rather than forgotten.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import cache
from harness.errors import InputError
from harness.results.guestlog import TestTrace
from harness.results.records import (
    BootRecord,
    BuildRecord,
    StageRecord,
    build_id_for,
    check_signal,
    list_of,
    record_from,
)

RECORDS_JSON = "records.json"
VERSION = 1


@dataclass
class KernelRun:
    """One kernel of a session: what it is, and its build, boots and failed stages."""

    label: str
    config: str
    series: str
    overrides: list[str] = field(default_factory=list)
    build: BuildRecord | None = None
    boots: list[BootRecord] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    vm_wait_seconds: float = 0.0  # tests waited this long in the kernel_vm fixture for a VM to be up
    vm_waits: int = 0  # that many times (boots, resumes, spares waited for; spare boots excluded)

    @property
    def build_id(self) -> str:
        return build_id_for(self.label)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "config": self.config, "series": self.series,
                "overrides": list(self.overrides),
                "build": None if self.build is None else _asdict(self.build),
                "boots": [_asdict(b) for b in self.boots],
                "stages": [_asdict(s) for s in self.stages],
                "vm_wait_seconds": self.vm_wait_seconds, "vm_waits": self.vm_waits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelRun:
        build = data.get("build")
        if build is not None and not isinstance(build, Mapping):
            raise TypeError("'build' must be an object or null")
        overrides = data.get("overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise TypeError("'overrides' must be a list of strings")
        return cls(label=_str(data, "label"), config=_str(data, "config"), series=_str(data, "series"),
                   overrides=overrides,
                   build=None if build is None else record_from(BuildRecord, build),
                   boots=[record_from(BootRecord, b) for b in list_of(data, "boots")],
                   stages=[record_from(StageRecord, s) for s in list_of(data, "stages")],
                   vm_wait_seconds=_number(data, "vm_wait_seconds"), vm_waits=int(_number(data, "vm_waits")))


@dataclass
class SessionRecords:
    """Everything one session reports besides JUnit.

    ``done``: the tests whose run completed (every phase reported); a test that
    began but is not done was cut short (an interrupt), whatever JUnit shows.
    ``other_overrides``: in a ``harness test`` cell, the ``set=`` overrides that
    tests of this cell's config and series ask for and this cell's kernel does
    not have; each is a cell of its own (one cell, one kernel).
    ``interrupted`` names the signal that stopped the session.
    ``wall_seconds``: the session's wall time, pytest configured to session
    end (each kernel's ``vm_wait_seconds`` over it: the share spent waiting for VMs).
    ``traces``: the guest commands of each test (:mod:`harness.results.guestlog`).
    """

    kernels: list[KernelRun] = field(default_factory=list)
    tests: dict[str, str] = field(default_factory=dict)  # node id -> kernel label
    done: list[str] = field(default_factory=list)
    other_overrides: list[list[str]] = field(default_factory=list)
    interrupted: str | None = None
    wall_seconds: float | None = None
    traces: dict[str, TestTrace] = field(default_factory=dict)  # node id -> its guest commands

    def kernel(self, label: str) -> KernelRun | None:
        return next((k for k in self.kernels if k.label == label), None)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "kernels": [k.to_dict() for k in self.kernels],
                           "tests": self.tests, "done": self.done, "other_overrides": self.other_overrides,
                           "interrupted": self.interrupted, "wall_seconds": self.wall_seconds,
                           "traces": {k: t.to_dict() for k, t in self.traces.items()}},
                          indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: str = RECORDS_JSON) -> SessionRecords:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise InputError(f"{where}: not session records of version {VERSION}")
        try:
            tests = data.get("tests", {})
            if not isinstance(tests, dict) or not all(isinstance(v, str) for v in tests.values()):
                raise TypeError("'tests' must map node ids to kernel labels")
            done = data.get("done", [])
            if not isinstance(done, list) or not all(isinstance(d, str) for d in done):
                raise TypeError("'done' must be a list of node ids")
            other = data.get("other_overrides", [])
            if not isinstance(other, list) or not all(
                    isinstance(o, list) and all(isinstance(s, str) for s in o) for o in other):
                raise TypeError("'other_overrides' must be a list of lists of strings")
            traces = data.get("traces", {})
            if not isinstance(traces, dict) or not all(isinstance(t, Mapping) for t in traces.values()):
                raise TypeError("'traces' must map node ids to objects")
            wall = data.get("wall_seconds")
            return cls(kernels=[KernelRun.from_dict(k) for k in list_of(data, "kernels")],
                       tests=tests, done=done, other_overrides=other,
                       interrupted=check_signal(data.get("interrupted")),
                       wall_seconds=None if wall is None else _number(data, "wall_seconds"),
                       traces={k: TestTrace.from_dict(t) for k, t in traces.items()})
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{where}: malformed session records: {exc}") from exc

    def write(self, path: Path) -> None:
        cache.write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> SessionRecords:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{path}: cannot read session records ({exc.strerror})") from exc
        return cls.from_json(text, where=str(path))


def _asdict(record: BuildRecord | BootRecord | StageRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)


def _number(data: Mapping[str, Any], key: str) -> float:
    """A non-negative number (0 when absent: records written before the field existed)."""
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise TypeError(f"{key!r} must be a non-negative number")
    return float(value)


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string")
    return value
