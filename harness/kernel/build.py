"""Build stage: a patched, configured, compiled 2.6.20 bzImage, cached.

One cache entry per (source, series, config, toolchain) key, in
``builds/<series>-<config>-<key>/``::

    src/          work tree: hard links to the pristine tree, patched files replaced
    out/          the O= build directory, kept for incremental builds
    build.log     the log of the last build
    meta.json     written only after a successful build

A build whose inputs (source, patch contents, config fragment, toolchain) are
unchanged is a cache hit and runs no ``make``.  When a patch changes, the
work tree is rebuilt beside the old one and only files whose contents differ
are moved in, so ``make`` recompiles only what changed.

``meta.json`` is checked whenever it is read (:mod:`harness.kernel.build_entry`):
a damaged entry is moved aside and built anew.  A full disk anywhere (the
hard-linked copy, a patch, make, the linker) is one :class:`DiskFull` line
naming the entry and the cause; ``meta.json`` is never written then.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import cache, proc, progress
from harness.errors import DiskFull, InfraError, InputError, StageError
from harness.kernel import build_entry, config
from harness.kernel.build_entry import ARCH, artefact_paths
from harness.kernel.config import ConfigRequest
from harness.kernel.patches import Series, apply_series
from harness.kernel.source import Source

CC = "gcc -m32"
OLDCONFIG_ANSWERS = "\n" * 4000  # `yes ''`: take the default for every new question
#: plain-C messages, and no flags from a make the harness may run under (`make -s test`
#: would otherwise silence kbuild, and a parent's jobserver would cap -j)
MAKE_ENV: dict[str, str | None] = {"LC_ALL": "C", "MAKEFLAGS": None, "MFLAGS": None, "MAKELEVEL": None}


@dataclass(frozen=True)
class Toolchain:
    cc: str
    gcc: str
    binutils: str
    make: str

    @property
    def id(self) -> str:
        return cache.digest(self.cc, self.gcc, self.binutils, self.make)


@dataclass(frozen=True)
class BuildRequest:
    source: Source
    series: Series
    config: ConfigRequest
    jobs: int = field(default_factory=lambda: (os.cpu_count() or 1) + 1)

    def __post_init__(self) -> None:
        check_jobs(self.jobs)


def check_jobs(jobs: int, option: str = "-j") -> None:
    """Refuse a job count make would not take (checked before any work)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"{option} {jobs}: expected a number of parallel make jobs, 1 or more")


@dataclass(frozen=True)
class BuildResult:
    key: str
    directory: Path
    bzimage: Path
    dotconfig: Path
    system_map: Path
    log: Path
    cached: bool
    duration: float
    warnings: int

    @property
    def meta_path(self) -> Path:
        return self.directory / "meta.json"


def _first_line(argv: list[str]) -> str:
    try:
        result = proc.run(argv, check=False)
    except (StageError, InfraError):  # ToolMissing
        return "missing"
    return (result.stdout or result.stderr).splitlines()[0].strip() if result.ok else "missing"


def detect_toolchain(cc: str = CC) -> Toolchain:
    return Toolchain(
        cc=cc,
        gcc=_first_line([cc.split()[0], "--version"]),
        binutils=_first_line(["ld", "--version"]),
        make=_first_line(["make", "--version"]),
    )


def entry_dir(request: BuildRequest, toolchain: Toolchain) -> tuple[str, Path]:
    key = cache.digest(
        request.source.id, request.series.name, request.config.digest(), toolchain.id
    )
    return key, cache.root() / "builds" / f"{request.series.name}-{request.config.name}-{key}"


def _inputs(request: BuildRequest, toolchain: Toolchain) -> dict[str, Any]:
    return {
        "source": {"id": request.source.id, "origin": request.source.origin},
        "series": request.series.name,
        "patches": [
            {"name": f"{p.series}/{p.name}", "sha256": p.sha256} for p in request.series.patches
        ],
        "config": request.config.name,
        "overrides": request.config.overrides,
        "fragment_sha256": cache.digest(request.config.fragment(), length=64),
        "toolchain": asdict(toolchain),
    }


# --- work tree -------------------------------------------------------------------


def link_tree(pristine: Path, dest: Path) -> None:
    """Make ``dest`` a hard-linked copy of ``pristine`` with writable directories."""
    result = proc.run(["cp", "-al", f"{pristine}/.", str(dest)], check=False)
    if not result.ok:
        output = result.stderr + result.stdout
        full = proc.enospc_line(output)
        if full is not None:
            raise DiskFull(dest.parent, f"hard-linking the source ({full})")
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise StageError(f"hard-link copy of {pristine} into {dest} failed (exit "
                         f"{result.returncode}): {tail}", stage="build")
    for dirpath, _dirnames, _ in os.walk(dest):
        os.chmod(dirpath, 0o755)


def _same(a: str, b: str) -> bool:
    sa, sb = os.lstat(a), os.lstat(b)
    if (sa.st_ino, sa.st_dev) == (sb.st_ino, sb.st_dev):
        return True
    if os.path.islink(a) or os.path.islink(b):
        return os.path.islink(a) and os.path.islink(b) and os.readlink(a) == os.readlink(b)
    return sa.st_size == sb.st_size and filecmp.cmp(a, b, shallow=False)


def sync_tree(new: Path, old: Path) -> int:
    """Make ``old`` match ``new``, touching only files whose contents differ.

    Unchanged files keep their timestamps, so ``make`` rebuilds only what a
    changed patch touched.  Returns the number of files replaced or removed.
    """
    changed = 0
    for dirpath, dirnames, filenames in os.walk(old, topdown=True):
        rel = os.path.relpath(dirpath, old)
        for name in list(dirnames) + filenames:
            if not os.path.lexists(new / rel / name):
                cache.remove_tree(Path(dirpath) / name)
                changed += 1
                if name in dirnames:
                    dirnames.remove(name)
    for dirpath, dirnames, filenames in os.walk(new):
        rel = os.path.relpath(dirpath, new)
        target_dir = old / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            src, dst = os.path.join(dirpath, name), target_dir / name
            if dst.exists() or dst.is_symlink():
                if _same(src, str(dst)):
                    continue
                if dst.is_dir() and not dst.is_symlink():
                    cache.remove_tree(dst)
            os.replace(src, dst)
            changed += 1
    return changed


def prepare_tree(request: BuildRequest, stage: Path) -> None:
    """Hard-link the pristine tree into ``stage``, apply the series, check the config."""
    link_tree(request.source.tree, stage)
    apply_series(request.series, stage)
    config.validate(request.config, config.read_kconfig(stage))


# --- make ------------------------------------------------------------------------


def make_argv(src: Path, out: Path, toolchain: Toolchain, *targets: str, jobs: int = 1) -> list[str]:
    return ["make", "-C", str(src), f"O={out}", f"ARCH={ARCH}", f"CC={toolchain.cc}",
            f"-j{jobs}", *targets]


_ERROR_RE = re.compile(r"(error:|Error \d+|undefined reference|\*\*\*)")
_WARNING_RE = re.compile(r"warning:")


def first_errors(log: Path, limit: int = 8) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    hits = [line for line in lines if _ERROR_RE.search(line)]
    return hits[:limit]


def count_warnings(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if _WARNING_RE.search(line))


def _make(argv: list[str], log: Path, title: str, answers: str | None = None) -> None:
    with log.open("a", buffering=1) as logf, progress.step(title) as step:  # line-buffered: tail -f works
        def on_line(line: str) -> None:
            if line.startswith("  ") and len(line.split()) >= 2:
                step.update(line.strip())

        result = proc.stream(argv, log_to=logf, on_line=on_line, input=answers, env=MAKE_ENV)
        if not result.ok:  # raised inside the step, so that it shows as FAILED
            _make_failed(result.returncode, log, title)


def _make_failed(returncode: int, log: Path, title: str) -> None:
    """Raise the error of a failed make: DiskFull when the log says the disk was full (the
    cause is often only there, e.g. ``ld: final link failed``), else the first errors."""
    full = proc.enospc_line(log.read_text(errors="replace"))
    if full is not None:
        raise DiskFull(log.parent, f"running make ({title}): {full}; log {log}")
    errors = "\n  ".join(first_errors(log)) or "(no compiler error found in the log)"
    raise StageError(f"{title} failed (exit {returncode}); log: {log}\n  {errors}", stage="build")


def configure(request: BuildRequest, src: Path, out: Path, toolchain: Toolchain, log: Path) -> None:
    """allnoconfig, merge the fragment, oldconfig with defaults, check survivors.

    If the resulting ``.config`` is identical to the previous one, its old
    timestamp is restored so ``make`` sees nothing new.
    """
    dotconfig = out / ".config"
    previous = dotconfig.read_text() if dotconfig.exists() else None
    old_stat = dotconfig.stat() if dotconfig.exists() else None
    _make(make_argv(src, out, toolchain, "allnoconfig"), log, "configure: allnoconfig")
    dotconfig.write_text(config.merge(dotconfig.read_text(), request.config.symbols))
    _make(make_argv(src, out, toolchain, "oldconfig"), log, "configure: oldconfig",
          answers=OLDCONFIG_ANSWERS)
    final = dotconfig.read_text()
    config.check_survivors(request.config, final)
    if previous == final and old_stat is not None:
        os.utime(dotconfig, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))


# --- the stage -------------------------------------------------------------------


def _result(directory: Path, meta: build_entry.BuildMeta, cached: bool) -> BuildResult:
    return BuildResult(
        key=meta.key,
        directory=directory,
        bzimage=meta.paths["bzImage"],
        dotconfig=meta.paths["config"],
        system_map=meta.paths["System.map"],
        log=meta.paths["log"],
        cached=cached,
        duration=meta.duration,
        warnings=meta.warnings,
    )


def load_meta(directory: Path) -> dict[str, Any] | None:
    """meta.json as it is, unchecked (for tools and tests; builds use build_entry.read_meta)."""
    path = directory / "meta.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build(request: BuildRequest, *, force: bool = False) -> BuildResult:
    """Build (or find in the cache) the kernel described by ``request``."""
    toolchain = detect_toolchain()
    key, directory = entry_dir(request, toolchain)
    inputs = _inputs(request, toolchain)
    with cache.lock(f"build-{key}", f"the build {directory.name}"):
        meta = build_entry.load_checked(directory, key) if directory.exists() else None
        if (
            not force
            and meta is not None
            and meta.inputs == inputs
            and meta.paths["bzImage"].is_file()
        ):
            return _result(directory, meta, cached=True)
        with cache.disk_full_guard(directory, f"building {request.series.name}/{request.config.label}"):
            return _build_locked(request, toolchain, key, directory, inputs)


def _build_locked(
    request: BuildRequest, toolchain: Toolchain, key: str, directory: Path, inputs: dict[str, Any]
) -> BuildResult:
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    src, out, log = directory / "src", directory / "out", directory / "build.log"
    started = time.monotonic()
    stage = directory / ".src.stage"
    dirty = directory / ".src.dirty"
    try:
        cache.remove_tree(stage)
        stage.mkdir()
        with progress.step(f"prepare tree ({request.series.name}, {len(request.series.patches)} patches)"):
            prepare_tree(request, stage)
    except BaseException:
        cache.remove_tree(stage)
        if created:
            cache.remove_tree(directory)
        raise
    (directory / "meta.json").unlink(missing_ok=True)
    if not src.exists() or dirty.exists():
        cache.remove_tree(src)
        os.rename(stage, src)
    else:
        dirty.touch()
        sync_tree(stage, src)
        cache.remove_tree(stage)
    dirty.unlink(missing_ok=True)
    out.mkdir(exist_ok=True)
    log.write_text(f"# harness build {request.series.name}/{request.config.label}\n")
    try:
        configure(request, src, out, toolchain, log)
    except InputError:
        if created:  # a config that cannot be had leaves nothing behind
            cache.remove_tree(directory)
        raise
    _make(make_argv(src, out, toolchain, "bzImage", jobs=request.jobs), log,
          f"build {request.series.name}/{request.config.label}")
    duration = time.monotonic() - started
    bzimage = artefact_paths(directory)["bzImage"]
    if not bzimage.is_file():
        raise StageError(f"make succeeded but {bzimage} is missing; log: {log}", stage="build")
    meta = build_entry.new_meta(directory, key, inputs, duration, count_warnings(log), request.jobs)
    cache.copy_atomic(log, directory / "build-last-success.log")
    build_entry.write_meta(directory, meta)
    return _result(directory, meta, cached=False)
