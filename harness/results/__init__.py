"""The results directory: what a run found, for people and for CI.

A run writes one directory (``results/<timestamp>/`` by default)::

    summary.json    every record (schema below); the source of truth, written last
    junit.xml       merged JUnit: one <testsuite> per kernel, with "build" and "boot" cases
    index.html      one static page: counts, test x kernel matrix, failure details
    logs/<kernel>/  copies of build.log and console logs the records point to

The records are shaped like KernelCI's KCIDB ones (``origin``, ``id``,
``duration``, log paths, PASS/FAIL/ERROR/SKIP statuses):

* :class:`Checkout` -- what was built: the source id and a patch series with
  the sha256 of each patch (KCIDB's checkout);
* :class:`BuildRecord` -- one kernel, ``<series>/<config>`` (its label), built;
* :class:`BootRecord` -- one boot of a build in QEMU;
* :class:`TestRecord` -- one pytest test run in the guest of a build.  ``path``
  is the pytest node id; status ``ERROR`` means the infrastructure failed (a
  fixture/setup error, :class:`~harness.errors.InfraError`), never a verdict.
  ``xfail`` is ``"xfail"`` for an expected failure (status SKIP) or
  ``"xpass"`` for a strict xfail that passed (status FAIL).

Paths in ``summary.json`` are relative to the results directory when the file
is inside it (log files are copied in), so a directory can be moved, archived
by CI or merged.  ``summary.json`` carries ``version: {major, minor}``; a
reader refuses another major version and ignores unknown keys.

JUnit input (:func:`parse_junit`) is pytest's ``--junitxml``; with
``-o junit_logging=all`` each testcase's ``<system-out>`` is kept as the guest
console excerpt and ``<system-err>`` as the kernel log excerpt (properties
``console_log`` / ``kernel_log`` recorded with ``record_property`` win over
them, and a ``nodeid`` property gives the exact node id).  Excerpts are
truncated to :data:`MAX_EXCERPT` characters, keeping the head and the
(more telling) tail.

Exit codes (:func:`exit_code`, used by ``harness report``/test commands):

====  ===============================================================
0     every test passed (skips, xfails and non-strict xpasses are fine)
1     at least one test FAILed (a strict xpass is a failure)
2     infrastructure errors: a test ERROR, or a build or boot that is
      not PASS; this wins over 1
====  ===============================================================

All files are written atomically: to a temporary name in the same directory,
then renamed.  :func:`merge` combines shard directories into one; the same
test on the same kernel twice keeps its worst status (ERROR > FAIL > SKIP >
PASS) with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import filecmp
import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar
from urllib.parse import quote

import jinja2

from harness.errors import InputError

log = logging.getLogger(__name__)

ORIGIN = "harness"
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 0
MAX_EXCERPT = 16_000
"""Longest log excerpt (console, kernel log, traceback) kept per test, in characters."""

Status = Literal["PASS", "FAIL", "SKIP", "ERROR"]
STATUSES: tuple[Status, ...] = ("PASS", "SKIP", "FAIL", "ERROR")
"""From best to worst: merging duplicates keeps the later one in this order."""
XFail = Literal["xfail", "xpass"]

SUMMARY_JSON = "summary.json"
JUNIT_XML = "junit.xml"
INDEX_HTML = "index.html"
LOGS = "logs"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INFRA = 2


# --------------------------------------------------------------------------- records


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
    """One kernel build.  ``kernel`` is its label, ``<series>/<config>``."""

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

    def __post_init__(self) -> None:
        if not self.kernel:
            self.kernel = f"{self.series}/{self.config}"

    @classmethod
    def new(cls, series: str, config: str, status: Status, **kw: Any) -> BuildRecord:
        """A record whose id is ``harness:<series>/<config>``."""
        return cls(id=f"{ORIGIN}:{series}/{config}", series=series, config=config, status=status, **kw)


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

    @property
    def label(self) -> str:
        """What a report shows: PASS, FAIL, ERROR, SKIP, XFAIL or XPASS."""
        if self.xfail == "xfail" and self.status == "SKIP":
            return "XFAIL"
        if self.xfail == "xpass":
            return "XPASS"
        return self.status


def record_id(build_id: str, path: str) -> str:
    """A test record's id: its build id and node id."""
    return f"{build_id}:{path}"


@dataclass
class Summary:
    """Everything a results directory knows (``summary.json``)."""

    checkouts: list[Checkout] = field(default_factory=list)
    builds: list[BuildRecord] = field(default_factory=list)
    boots: list[BootRecord] = field(default_factory=list)
    tests: list[TestRecord] = field(default_factory=list)
    created: str = field(default_factory=lambda: _now())
    origin: str = ORIGIN

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": {"major": SCHEMA_MAJOR, "minor": SCHEMA_MINOR},
            "origin": self.origin,
            "created": self.created,
            "checkouts": [dataclasses.asdict(c) for c in self.checkouts],
            "builds": [dataclasses.asdict(b) for b in self.builds],
            "boots": [dataclasses.asdict(b) for b in self.boots],
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
                checkouts=[_checkout_from(d) for d in _list(data, "checkouts")],
                builds=[_record_from(BuildRecord, d) for d in _list(data, "builds")],
                boots=[_record_from(BootRecord, d) for d in _list(data, "boots")],
                tests=[_record_from(TestRecord, d) for d in _list(data, "tests")],
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

    def counts(self) -> dict[str, int]:
        """Test counts by label (PASS, FAIL, ERROR, SKIP, XFAIL, XPASS) plus build/boot tallies."""
        out = {k: 0 for k in ("tests", "PASS", "FAIL", "ERROR", "SKIP", "XFAIL", "XPASS")}
        for t in self.tests:
            out["tests"] += 1
            out[t.label] += 1
        out["builds"] = len(self.builds)
        out["builds_failed"] = sum(b.status != "PASS" for b in self.builds)
        out["boots"] = len(self.boots)
        out["boots_failed"] = sum(b.status != "PASS" for b in self.boots)
        return out


def load_summary(path: Path) -> Summary:
    """Read ``summary.json`` from a results directory (or the file itself)."""
    file = path / SUMMARY_JSON if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{file}: cannot read results summary ({exc.strerror})") from exc
    return Summary.from_json(text, where=str(file))


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _list(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise TypeError(f"{key!r} must be a list of objects")
    return value


def _check_status(value: object) -> Status:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r} (expected one of {', '.join(STATUSES)})")
    return value


_R = TypeVar("_R", BuildRecord, BootRecord, TestRecord)


def _record_from(cls: type[_R], data: Mapping[str, Any]) -> _R:
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["status"] = _check_status(kwargs.get("status"))
    if kwargs.get("xfail") not in (None, "xfail", "xpass"):
        raise ValueError(f"unknown xfail value {kwargs['xfail']!r}")
    return cls(**kwargs)


def _checkout_from(data: Mapping[str, Any]) -> Checkout:
    names = {f.name for f in dataclasses.fields(Checkout)}
    kwargs = {k: v for k, v in data.items() if k in names}
    kwargs["patches"] = [PatchFile(name=str(p["name"]), sha256=str(p["sha256"]))
                         for p in kwargs.get("patches", [])]
    return Checkout(**kwargs)


def worst(a: Status, b: Status) -> Status:
    return a if STATUSES.index(a) >= STATUSES.index(b) else b


def exit_code(summary: Summary) -> int:
    """0 all passed, 1 a test failed, 2 an infrastructure error (see the module docstring)."""
    if (any(t.status == "ERROR" for t in summary.tests)
            or any(b.status != "PASS" for b in summary.builds)
            or any(b.status != "PASS" for b in summary.boots)):
        return EXIT_INFRA
    if any(t.status == "FAIL" for t in summary.tests):
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------- JUnit input

_SECTION = re.compile(r"^-{3,} (?P<title>[^\n]*?) -{3,}$", re.M)


def truncate(text: str, limit: int = MAX_EXCERPT) -> str:
    """``text`` if short enough, else its head and tail (at line boundaries) around a marker.

    The tail gets three quarters of the room: the lines before a failure tell most.
    """
    if len(text) <= limit:
        return text
    head_room = limit // 4
    tail_room = limit - head_room
    head = text[:head_room]
    tail = text[-tail_room:]
    if "\n" in head:
        head = head[: head.rindex("\n") + 1]
    if "\n" in tail:
        tail = tail[tail.index("\n") + 1:]
    cut = len(text) - len(head) - len(tail)
    return f"{head}[... {cut} characters cut ...]\n{tail}"


def clean_captured(text: str) -> str:
    """Drop pytest's empty ``--- Captured X ---`` sections; keep headers only when several remain."""
    matches = list(_SECTION.finditer(text))
    if not matches:
        return text.strip("\n")
    sections: list[tuple[str, str]] = []
    prefix = text[: matches[0].start()].strip("\n")
    if prefix.strip():
        sections.append(("", prefix))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end].strip("\n")
        if body.strip():
            sections.append((m.group("title"), body))
    if len(sections) == 1:
        return sections[0][1]
    return "\n".join(f"--- {title} ---\n{body}" if title else body for title, body in sections)


def _nodeid(classname: str, name: str) -> str:
    """Best-effort inverse of pytest's JUnit name mangling.

    pytest writes ``dir/test_x.py::TestC::test_m`` as classname
    ``dir.test_x.TestC`` and name ``test_m``.  The module is taken to end at
    the last dotted part that looks like a test module (``test_*``/``*_test``).
    """
    if not classname:
        return name
    parts = classname.split(".")
    end = 0
    for i, part in enumerate(parts):
        if part.startswith("test_") or part.endswith("_test") or part == "test":
            end = i + 1
    if end == 0:
        end = len(parts)
    module = "/".join(parts[:end]) + ".py"
    return "::".join([module, *parts[end:], name])


def _text_of(elements: Iterable[ET.Element]) -> str:
    return "\n".join(clean_captured(e.text or "") for e in elements if (e.text or "").strip()).strip("\n")


def _is_infra(message: str, details: str) -> bool:
    return "InfraError" in message or any(
        line.startswith("E ") and "InfraError" in line for line in details.splitlines()
    )


def _testcase_record(case: ET.Element, build_id: str, start_time: str | None, limit: int) -> TestRecord:
    props = {p.get("name", ""): p.get("value", "") for p in case.iterfind("properties/property")}
    path = props.get("nodeid") or _nodeid(case.get("classname", ""), case.get("name", ""))
    try:
        duration: float | None = float(case.get("time", ""))
    except ValueError:
        duration = None
    status: Status = "PASS"
    xfail: XFail | None = None
    messages: list[str] = []
    details: list[str] = []
    for child in case:
        if child.tag not in ("failure", "error", "skipped"):
            continue
        message = child.get("message", "")
        text = (child.text or "").strip("\n")
        if child.tag == "failure":
            infra = _is_infra(message, text) or "infra_error" in props
            this: Status = "ERROR" if infra else "FAIL"
            if message.startswith("[XPASS(strict)]"):
                xfail = "xpass"
        elif child.tag == "error":
            this = "ERROR"
        else:
            this = "SKIP"
            if child.get("type") == "pytest.xfail":
                xfail = "xfail"
        status = worst(status, this)
        if message:
            messages.append(message)
        if text and text != message:
            details.append(text)
    if xfail == "xfail" and status != "SKIP":
        xfail = None  # an xfail whose teardown then failed: the failure is what counts
    console = props.get("console_log") or _text_of(case.iterfind("system-out"))
    kernel_log = props.get("kernel_log") or _text_of(case.iterfind("system-err"))
    return TestRecord(
        id=record_id(build_id, path),
        build_id=build_id,
        path=path,
        status=status,
        duration=duration,
        message=truncate("\n".join(messages), limit) or None,
        details=truncate("\n\n".join(details), limit) or None,
        console_excerpt=truncate(console, limit) or None,
        kernel_log_excerpt=truncate(kernel_log, limit) or None,
        xfail=xfail,
        start_time=start_time,
    )


def parse_junit(path: Path, build_id: str, *, limit: int = MAX_EXCERPT) -> list[TestRecord]:
    """The tests of one pytest ``--junitxml`` file, as records of build ``build_id``."""
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise InputError(f"{path}: cannot read JUnit file ({exc.strerror})") from exc
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a JUnit XML file: {exc}") from exc
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if root.tag not in ("testsuite", "testsuites"):
        raise InputError(f"{path}: not a JUnit XML file (root element <{root.tag}>)")
    records: list[TestRecord] = []
    for suite in suites:
        start = suite.get("timestamp")
        for case in suite.iterfind("testcase"):
            records.append(_testcase_record(case, build_id, start, limit))
    return records


# --------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def _atomic(path: Path, mode: Literal["w", "wb"] = "w") -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        f: IO[Any]
        with (os.fdopen(fd, "w", encoding="utf-8") if mode == "w" else os.fdopen(fd, "wb")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with _atomic(path, "w") as f:
        f.write(text)


def _copy_atomic(src: Path, dest: Path) -> None:
    with _atomic(dest, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


# --------------------------------------------------------------------------- the directory


class ResultsDir:
    """A results directory being filled: add records, then :meth:`write`.

    Log files given by absolute path are copied into ``logs/<kernel>/`` when
    added (``copy_logs``), so the directory stands alone; records then hold
    paths relative to the directory.
    """

    def __init__(self, path: Path, summary: Summary | None = None, *, copy_logs: bool = True) -> None:
        self.path = path.absolute()
        self.path.mkdir(parents=True, exist_ok=True)
        self.summary = summary if summary is not None else Summary()
        self.copy_logs = copy_logs

    @classmethod
    def create(cls, parent: Path = Path("results"), *, now: _dt.datetime | None = None) -> ResultsDir:
        """A new ``<parent>/<YYYYmmdd-HHMMSS>`` directory (``-2``, ``-3``... when taken)."""
        stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            candidate = parent / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return cls(candidate)
        raise InputError(f"{parent}: too many results directories named {stamp}")

    @classmethod
    def open(cls, path: Path) -> ResultsDir:
        """An existing results directory, to add to."""
        return cls(path, load_summary(path))

    # -- adding records

    def add_checkout(self, checkout: Checkout) -> Checkout:
        if all(c.id != checkout.id for c in self.summary.checkouts):
            self.summary.checkouts.append(checkout)
        return checkout

    def add_build(self, build: BuildRecord) -> BuildRecord:
        """Add (or replace, same id) a build; its log is copied in."""
        build.log_path = self._adopt(build.log_path, build.kernel, "build.log")
        self.summary.builds = [b for b in self.summary.builds if b.id != build.id] + [build]
        return build

    def add_boot(self, boot: BootRecord) -> BootRecord:
        """Add a boot of a build (several per build are fine); its console log is copied in."""
        built = self.summary.build(boot.build_id)
        kernel = built.kernel if built else boot.build_id
        boot.console_log_path = self._adopt(boot.console_log_path, kernel, "console.log")
        self.summary.boots = [b for b in self.summary.boots if b.id != boot.id] + [boot]
        return boot

    def add_test(self, test: TestRecord) -> TestRecord:
        """Add a test; the same path on the same build keeps the worst status, with a warning."""
        self.summary.tests = _add_test(self.summary.tests, test, where=str(self.path))
        return test

    def add_tests_from_junit(self, path: Path, build_id: str, *,
                             limit: int = MAX_EXCERPT) -> list[TestRecord]:
        """Add the tests of a pytest ``--junitxml`` file run on build ``build_id``."""
        records = parse_junit(path, build_id, limit=limit)
        for record in records:
            self.add_test(record)
        return records

    def _adopt(self, log_path: str | None, kernel: str, name: str) -> str | None:
        """``log_path`` relative to the directory, copying it in when it lives elsewhere."""
        if not log_path:
            return log_path
        src = Path(log_path)
        if not src.is_absolute():
            if (self.path / src).exists():
                return src.as_posix()
            src = src.absolute()
        with contextlib.suppress(ValueError):
            return src.resolve().relative_to(self.path.resolve()).as_posix()
        if not self.copy_logs or not src.is_file():
            if not src.exists():
                log.warning("%s: log file does not exist; the report links to it anyway", src)
            return str(src)
        dest = _unique(self.path / LOGS / _slug(kernel) / name)
        _copy_atomic(src, dest)
        return dest.relative_to(self.path).as_posix()

    # -- writing

    def write(self) -> Path:
        """Write ``junit.xml``, ``index.html`` then ``summary.json``, each atomically; returns the dir."""
        write_text_atomic(self.path / JUNIT_XML, render_junit(self.summary))
        write_text_atomic(self.path / INDEX_HTML, render_html(self.summary))
        write_text_atomic(self.path / SUMMARY_JSON, self.summary.to_json())
        return self.path


def _unique(dest: Path) -> Path:
    if not dest.exists():
        return dest
    for n in range(2, 10_000):
        candidate = dest.with_name(f"{dest.stem}-{n}{dest.suffix}")
        if not candidate.exists():
            return candidate
    raise InputError(f"{dest}: too many files with this name")


def _add_test(tests: list[TestRecord], new: TestRecord, *, where: str) -> list[TestRecord]:
    for i, old in enumerate(tests):
        if old.build_id == new.build_id and old.path == new.path:
            keep = new if worst(old.status, new.status) == new.status and new.status != old.status else old
            log.warning(
                "%s: test %s ran twice on %s (%s, %s): keeping %s",
                where, new.path, new.build_id, old.label, new.label, keep.label,
            )
            tests[i] = keep
            return tests
    tests.append(new)
    return tests


# --------------------------------------------------------------------------- merge


def merge(result_dirs: list[Path], out: Path) -> Summary:
    """Combine shard results directories into ``out`` (written whole, atomically).

    Checkouts and builds are united by id (a build in several shards keeps
    its worst status); boots are all kept; a test seen twice on the same
    build keeps its worst status, with a warning.  Log files are copied,
    renamed when two shards have different files under one name.
    """
    if not result_dirs:
        raise InputError("report merge: no results directories given")
    out = out.absolute()
    for d in result_dirs:
        if d.absolute() == out:
            raise InputError(f"{out}: the output directory cannot also be an input")
    if out.exists() and any(out.iterdir()) and not (out / SUMMARY_JSON).exists():
        raise InputError(f"{out}: exists and is not a results directory; choose another -o")
    shards = [(d, load_summary(d)) for d in result_dirs]

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        merged = ResultsDir(stage, Summary(origin=ORIGIN))
        for shard_dir, shard in shards:
            _merge_one(merged, shard_dir.absolute(), shard)
        merged.write()
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out, old)
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return merged.summary


def _merge_one(merged: ResultsDir, shard_dir: Path, shard: Summary) -> None:
    summary = merged.summary
    for c in shard.checkouts:
        old = next((x for x in summary.checkouts if x.id == c.id), None)
        if old is None:
            summary.checkouts.append(c)
        elif old != c:
            log.warning("%s: checkout %s differs from another shard's; keeping the first", shard_dir, c.id)
    for b in shard.builds:
        b.log_path = _merge_log(merged.path, shard_dir, b.log_path)
        old_build = summary.build(b.id)
        if old_build is None:
            summary.builds.append(b)
        elif old_build.status != b.status:
            log.warning("%s: build %s is %s here and %s in another shard: keeping %s", shard_dir,
                        b.kernel, b.status, old_build.status, worst(old_build.status, b.status))
            if worst(old_build.status, b.status) == b.status:
                summary.builds[summary.builds.index(old_build)] = b
    for boot in shard.boots:
        boot.console_log_path = _merge_log(merged.path, shard_dir, boot.console_log_path)
        old_boot = next((x for x in summary.boots if x.id == boot.id), None)
        if old_boot is None:
            summary.boots.append(boot)
        elif worst(old_boot.status, boot.status) == boot.status and boot.status != old_boot.status:
            summary.boots[summary.boots.index(old_boot)] = boot
    for t in shard.tests:
        _add_test(summary.tests, t, where=str(shard_dir))


def _merge_log(out_dir: Path, shard_dir: Path, rel: str | None) -> str | None:
    if not rel or Path(rel).is_absolute():
        return rel
    src = shard_dir / rel
    if not src.is_file():
        log.warning("%s: log %s is missing", shard_dir, rel)
        return rel
    dest = out_dir / rel
    if dest.exists():
        if filecmp.cmp(src, dest, shallow=False):
            return rel
        dest = _unique(dest)
    _copy_atomic(src, dest)
    return dest.relative_to(out_dir).as_posix()


# --------------------------------------------------------------------------- JUnit output


def _junit_name(path: str) -> tuple[str, str]:
    """pytest's JUnit (classname, name) for a node id."""
    parts = path.split("::")
    if len(parts) == 1:
        return "", path
    module = parts[0].removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[1:-1]]), parts[-1]


def _fmt_time(seconds: float | None) -> str:
    return f"{seconds or 0.0:.3f}"


def _kernel_ids(summary: Summary) -> list[str]:
    """Build ids in order: builds first, then builds only tests or boots mention."""
    ids = [b.id for b in summary.builds]
    for build_id in [*(b.build_id for b in summary.boots), *(t.build_id for t in summary.tests)]:
        if build_id not in ids:
            ids.append(build_id)
    return ids


def _label(summary: Summary, build_id: str) -> str:
    b = summary.build(build_id)
    return b.kernel if b else build_id


def render_junit(summary: Summary) -> str:
    """One ``<testsuite>`` per kernel; its build and boots are testcases too (class ``harness``)."""
    root = ET.Element("testsuites", name="harness")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for build_id in _kernel_ids(summary):
        suite = ET.SubElement(root, "testsuite", name=_label(summary, build_id))
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="build_id", value=build_id)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite_time = 0.0
        cases: list[tuple[str, str, float | None, Status, str | None, str | None, str | None, str | None,
                          XFail | None]] = []
        build = summary.build(build_id)
        if build is not None:
            for key in ("series", "config", "status", "log_path", "bzimage_path"):
                value = getattr(build, key)
                if value is not None:
                    ET.SubElement(props, "property", name=f"build.{key}", value=str(value))
            ET.SubElement(props, "property", name="build.warnings", value=str(build.warnings))
            cases.append(("harness", "build", build.duration, build.status, build.message,
                          f"log: {build.log_path}" if build.log_path else None, None, None, None))
        for i, boot in enumerate(b for b in summary.boots if b.build_id == build_id):
            cases.append(("harness", "boot" if i == 0 else f"boot[{i + 1}]", boot.duration, boot.status,
                          boot.message, f"console log: {boot.console_log_path}"
                          if boot.console_log_path else None, None, None, None))
        for t in summary.tests:
            if t.build_id == build_id:
                classname, name = _junit_name(t.path)
                cases.append((classname, name, t.duration, t.status, t.message, t.details,
                              t.console_excerpt, t.kernel_log_excerpt, t.xfail))
        for classname, name, duration, status, message, details, out, err, xfail in cases:
            case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=_fmt_time(duration))
            counts["tests"] += 1
            suite_time += duration or 0.0
            if status in ("FAIL", "ERROR"):
                tag = "failure" if status == "FAIL" else "error"
                counts["failures" if status == "FAIL" else "errors"] += 1
                el = ET.SubElement(case, tag, message=message or status)
                el.text = details or message or ""
            elif status == "SKIP":
                counts["skipped"] += 1
                kind = "pytest.xfail" if xfail == "xfail" else "pytest.skip"
                el = ET.SubElement(case, "skipped", type=kind, message=message or "")
                if details:
                    el.text = details
            if out:
                ET.SubElement(case, "system-out").text = out
            if err:
                ET.SubElement(case, "system-err").text = err
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("time", _fmt_time(suite_time))
        total_time += suite_time
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", _fmt_time(total_time))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- HTML output


@dataclass
class _Cell:
    label: str
    css: str
    href: str | None = None
    title: str = ""
    extra: str = ""
    log_href: str | None = None


@dataclass
class _Kernel:
    build_id: str
    label: str
    build: _Cell
    boot: _Cell


@dataclass
class _Row:
    path: str
    cells: list[_Cell | None]


@dataclass
class _Failure:
    anchor: str
    kind: str
    kernel: str
    what: str
    label: str
    css: str
    duration: str
    message: str | None
    details: str | None
    console: str | None
    kernel_log: str | None
    log_href: str | None = None


def _css(label: str) -> str:
    return "st-" + label.lower()


def _href(path: str | None) -> str | None:
    """A link to a log: relative paths stay relative (URL-quoted), absolute ones become file: URLs."""
    if not path:
        return None
    p = Path(path)
    return p.as_uri() if p.is_absolute() else quote(p.as_posix(), safe="/")


def _anchor(kind: str, ident: str) -> str:
    return f"{kind}-" + hashlib.sha256(ident.encode()).hexdigest()[:12]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _view(summary: Summary) -> dict[str, Any]:
    kernels: list[_Kernel] = []
    failures: list[_Failure] = []
    build_ids = _kernel_ids(summary)
    for build_id in build_ids:
        label = _label(summary, build_id)
        build = summary.build(build_id)
        if build is None:
            bcell = _Cell("—", "st-none", title="no build record")
        else:
            bcell = _Cell(build.status, _css(build.status), title=_first_line(build.message),
                          extra=_dur(build.duration), log_href=_href(build.log_path))
            if build.warnings:
                bcell.extra += f", {build.warnings} warning{'s' if build.warnings != 1 else ''}"
            if build.status != "PASS":
                bcell.href = "#" + _anchor("build", build.id)
                failures.append(_Failure(bcell.href[1:], "build", label, "build", build.status,
                                         _css(build.status), _dur(build.duration), build.message, None,
                                         None, None, bcell.log_href))
        boots = [b for b in summary.boots if b.build_id == build_id]
        if not boots:
            ocell = _Cell("—", "st-none", title="not booted")
        else:
            status: Status = boots[0].status
            for b in boots[1:]:
                status = worst(status, b.status)
            shown = next(b for b in boots if b.status == status)
            ocell = _Cell(status, _css(status), title=_first_line(shown.message), extra=_dur(shown.duration),
                          log_href=_href(shown.console_log_path))
            if len(boots) > 1:
                ocell.extra += f" ({len(boots)} boots)"
            for b in boots:
                if b.status != "PASS":
                    anchor = _anchor("boot", b.id)
                    ocell.href = ocell.href or "#" + anchor
                    failures.append(_Failure(anchor, "boot", label, "boot", b.status, _css(b.status),
                                             _dur(b.duration), b.message, None, None, None,
                                             _href(b.console_log_path)))
        kernels.append(_Kernel(build_id, label, bcell, ocell))

    paths: list[str] = []
    seen: set[str] = set()
    by_key: dict[tuple[str, str], TestRecord] = {}
    for t in summary.tests:
        if t.path not in seen:
            seen.add(t.path)
            paths.append(t.path)
        by_key[(t.path, t.build_id)] = t
    rows: list[_Row] = []
    for path in paths:
        cells: list[_Cell | None] = []
        for build_id in build_ids:
            found = by_key.get((path, build_id))
            if found is None:
                cells.append(None)
                continue
            t = found
            cell = _Cell(t.label, _css(t.label), title=" — ".join(
                x for x in (_dur(t.duration), _first_line(t.message)) if x))
            if t.status in ("FAIL", "ERROR"):
                cell.href = "#" + _anchor("test", t.id)
                cell.css = _css(t.status)  # a strict XPASS is a failure: red
                failures.append(_Failure(cell.href[1:], "test", _label(summary, build_id), t.path, t.label,
                                         cell.css, _dur(t.duration), t.message, t.details,
                                         t.console_excerpt, t.kernel_log_excerpt))
            cells.append(cell)
        rows.append(_Row(path, cells))

    code = exit_code(summary)
    verdict = {EXIT_OK: "all tests passed", EXIT_FAILED: "tests failed",
               EXIT_INFRA: "infrastructure errors (build, boot or test ERROR)"}[code]
    return {
        "summary": summary,
        "counts": summary.counts(),
        "kernels": kernels,
        "rows": rows,
        "failures": failures,
        "exit_code": code,
        "verdict": verdict,
        "verdict_css": {EXIT_OK: "st-pass", EXIT_FAILED: "st-fail", EXIT_INFRA: "st-error"}[code],
        "checkouts": summary.checkouts,
    }


def _template() -> jinja2.Template:
    resource = importlib.resources.files("harness").joinpath("templates", "report.html.j2")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["lines"] = lambda text: len(str(text or "").splitlines())
    return env.from_string(resource.read_text(encoding="utf-8"))


def render_html(summary: Summary) -> str:
    """``index.html``: one static page, no external resources; everything escaped."""
    return _template().render(**_view(summary))
