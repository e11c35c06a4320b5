"""Benchmarks: print figures, write JSON.  Never asserts a time.

    python bench/bench.py [--json results/bench.json] [--only build]

Build figures use a throw-away series ``bench`` (the ``rcfs`` series plus one
patch that changes one line of kernel/rcfs.c) so the numbers do not disturb
the cache entries that tests use:

* build cold: no cache entry for the key (the pristine source is cached);
* build warm no-op: same inputs again (a cache hit, no make);
* build incremental: the one-line change in kernel/rcfs.c altered.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness import cache  # noqa: E402
from harness.kernel import build, config, patches, source  # noqa: E402

RESULTS: list[dict[str, Any]] = []


def record(name: str, seconds: float, note: str = "") -> None:
    RESULTS.append({"name": name, "seconds": round(seconds, 2), "note": note})
    print(f"{name:34} {seconds:8.2f} s  {note}", flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def _one_line_patch(tree: Path, marker: str) -> str:
    path = tree / "kernel" / "rcfs.c"
    old = path.read_text()
    lines = old.splitlines(True)
    lines.insert(1, f" * bench marker: {marker}\n")
    body = "".join(difflib.unified_diff(old.splitlines(True), lines,
                                        "a/kernel/rcfs.c", "b/kernel/rcfs.c"))
    return f"Subject: [PATCH] bench: one-line change ({marker})\n\n---\n{body}"


def _bench_series(work: Path, src: source.Source, base: str, name: str) -> tuple[Path, Path, Path]:
    """A copy of patches/ with series ``name`` = ``base`` + one patch file (written later by
    the caller with :func:`_one_line_patch`); (patches root, tree with ``base`` applied, patch file)."""
    root = work / "patches"
    shutil.copytree(patches.patches_dir(), root)
    # the rcfs.c that the bench patch edits: pristine plus the base series
    tree = work / "tree"
    tree.mkdir()
    build.link_tree(src.tree, tree)
    patches.apply_series(patches.load_series(base, root), tree)
    bench_dir = root / name
    bench_dir.mkdir()
    (bench_dir / "base").write_text(f"{base}\n")
    (bench_dir / "series").write_text("0001-bench.patch\n")
    return root, tree, bench_dir / "0001-bench.patch"


def bench_build() -> None:
    src = source.resolve(None, allow_download=True)
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        root, tree, patch_file = _bench_series(work, src, "rcfs", "bench")
        patch_file.write_text(_one_line_patch(tree, "one"))

        def request() -> build.BuildRequest:
            series = patches.load_series("bench", root)
            return build.BuildRequest(src, series, config.render("default", series_chain=series.chain))

        _key, entry = build.entry_dir(request(), build.detect_toolchain())
        cache.remove_tree(entry)
        seconds, result = timed(lambda: build.build(request()))
        record("build cold (default)", seconds, f"{result.warnings} warnings")
        seconds, result = timed(lambda: build.build(request()))
        record("build warm no-op", seconds, "cache hit" if result.cached else "REBUILT")
        patch_file.write_text(_one_line_patch(tree, "two"))
        seconds, result = timed(lambda: build.build(request()))
        compiled = [line.split()[-1] for line in result.log.read_text().splitlines()
                    if line.startswith("  CC ")]
        record("build after one-line rcfs.c change", seconds,
               f"recompiled {len(compiled)}: {' '.join(compiled[:4])}")
        cache.remove_tree(entry)
    finally:
        cache.remove_tree(work)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def distribution(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p95": _percentile(values, 0.95), "max": max(values)}


def record_distribution(name: str, values: list[float], note: str = "") -> dict[str, float]:
    d = distribution(values)
    RESULTS.append({"name": name, "seconds": round(d["median"], 3),
                    "distribution": {k: round(v, 3) for k, v in d.items()}, "note": note})
    print(f"{name:34} {d['median']:8.3f} s  min {d['min']:.3f}  p95 {d['p95']:.3f}  "
          f"max {d['max']:.3f}  (n={len(values)}) {note}", flush=True)
    return d


def bench_boot(runs: int = 24) -> None:
    """QEMU start to SSH ready, real boots and resumes of the saved boot, interleaved in one
    run so that both see the same machine load; then making a snapshot, and `harness run -- true`."""
    from harness.machine import snapshot
    from harness.run import target

    prepared = target.prepare(target.KernelSpec("default", "rcfs"))
    cold = target.BootOptions(snapshot=False)
    target.vm_config(prepared, target.BootOptions(), "bench")  # the snapshot exists before timing
    boots: list[float] = []
    resumes: list[float] = []
    milestones: dict[str, float] = {}
    for _ in range(runs):
        for options, times in ((cold, boots), (target.BootOptions(), resumes)):
            with target.booted(prepared, options) as vm:
                assert vm.boot_info is not None
                assert vm.boot_info.resumed == (times is resumes)
                times.append(vm.boot_info.boot_seconds)
                if times is boots:
                    milestones = vm.boot_info.milestones
    b = record_distribution("boot to SSH ready (real boot)", boots)
    r = record_distribution("resume to SSH ready (saved boot)", resumes)
    record("resume / boot (medians, same run)", r["median"] / b["median"], "ratio, not seconds")
    print("   milestones of the last boot: "
          + ", ".join(f"{name} {seconds:.2f}" for name, seconds in milestones.items()))
    cfg = target.vm_config(prepared, cold, "bench")
    with cache.lock(f"snapshot-{snapshot.key(cfg)}"):
        cache.remove_tree(snapshot.root() / snapshot.key(cfg))
    seconds, snap = timed(lambda: snapshot.ensure(cfg, "bench"))
    record("snapshot made (boot, save, check)", seconds,
           f"{snap.state.stat().st_size / 1e6:.1f} MB, once per kernel")
    trips: list[float] = []
    for _ in range(5):
        seconds, status = timed(lambda: subprocess.run(
            [sys.executable, "-m", "harness", "run", "--", "true"], stdin=subprocess.DEVNULL,
            check=False).returncode)
        trips.append(seconds)
    record_distribution("harness run -- true", trips, "build, image, snapshot cached")


def bench_ssh(runs: int = 200) -> None:
    """One guest command (`true`) in the user's shell and on its own exec channel."""
    from harness.run import target

    prepared = target.prepare(target.KernelSpec("default", "rcfs"))
    with target.booted(prepared) as vm:
        shell: list[float] = []
        fresh: list[float] = []
        for _ in range(runs):
            for times, is_fresh in ((shell, False), (fresh, True)):
                start = time.perf_counter()
                vm.run("true", fresh=is_fresh)
                times.append(time.perf_counter() - start)
    s = record_distribution("guest command `true` (shell)", shell)
    f = record_distribution("guest command `true` (exec channel)", fresh)
    record("shell / exec channel (medians)", s["median"] / f["median"], "ratio, not seconds")


def bench_change() -> None:
    """A one-line change in kernel/rcfs.c to the full suite's results on that kernel.

    Series ``bench-fixes`` = ``rcfs-fixes`` plus one patch adding a line to
    kernel/rcfs.c.  A first run makes everything warm (build, snapshot);
    then the line changes and ``harness test --config default --series
    bench-fixes`` is timed: incremental build, a new snapshot, the suite.
    """
    from harness.machine import snapshot
    from harness.run import target

    src = source.resolve(None, allow_download=True)
    work = Path(tempfile.mkdtemp(prefix="harness-bench-change-"))
    previous = os.environ.get("HARNESS_PATCHES")
    try:
        root, tree, patch_file = _bench_series(work, src, "rcfs-fixes", "bench-fixes")
        os.environ["HARNESS_PATCHES"] = str(root)
        argv = [sys.executable, "-m", "harness", "test", "--config", "default", "--series", "bench-fixes",
                "--results", str(work / "results")]
        outcomes = []
        for marker in ("one", "two"):
            patch_file.write_text(_one_line_patch(tree, marker))
            seconds, done = timed(lambda: subprocess.run(argv, cwd=REPO, check=False, capture_output=True,
                                                         text=True))
            summary = [line for line in done.stderr.splitlines() if " tests, " in line]
            outcomes.append((seconds, done.returncode, summary[-1].strip() if summary else "no summary"))
            prepared = target.prepare(target.KernelSpec("default", "bench-fixes"))
            cfg = target.vm_config(prepared, target.BootOptions(snapshot=False), "bench")
            with cache.lock(f"snapshot-{snapshot.key(cfg)}"):
                cache.remove_tree(snapshot.root() / snapshot.key(cfg))
            build_dir = prepared.build.directory
            if marker == "two" and build_dir.is_dir():
                cache.remove_tree(build_dir)
        record("one-line rcfs.c change to results", outcomes[1][0],
               f"exit {outcomes[1][1]}: {outcomes[1][2]} (first run, cold build: {outcomes[0][0]:.0f} s)")
    finally:
        if previous is None:
            os.environ.pop("HARNESS_PATCHES", None)
        else:
            os.environ["HARNESS_PATCHES"] = previous
        cache.remove_tree(work)


def _bisect_fixtures() -> Any:
    """The fixture helpers of tests/target/test_bisect_target.py (git history, regress series)."""
    import importlib.util

    path = REPO / "tests" / "target" / "test_bisect_target.py"
    spec = importlib.util.spec_from_file_location("bisect_target_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def bench_bisect() -> None:
    """Both bisect cases of tests/target/test_bisect_target.py: wall time, builds vs candidates.

    git: the synthetic history in $HARNESS_CACHE/bisect-fixture (7 candidates,
    compat on top); series: ``regress`` on rcfs-testss (5 candidates).  Both
    share their build entry between steps, so a build is incremental.
    """
    import os

    from harness.run import bisect_run

    fx = _bisect_fixtures()
    src = source.resolve(None, allow_download=True)
    opts = bisect_run.Options(progress=lambda message: print(f"   bisect: {message}", flush=True))
    work = Path(tempfile.mkdtemp(prefix="harness-bench-bisect-"))
    old_cwd = Path.cwd()
    os.chdir(REPO)
    try:
        fixture = fx.make_git_fixture(src.tree)
        seconds, outcome = timed(lambda: bisect_run.bisect_git(
            fixture.repo, fixture.good, "HEAD", fx.PROBE, "default", "compat", fx.TESTSS_SETS,
            work / "git.jsonl", options=opts))
        found = outcome.first_bad is not None and outcome.first_bad.id == fixture.regression
        record("bisect git (7 candidates)", seconds,
               f"{fixture.commits} candidates, {len(outcome.steps)} steps, {outcome.builds} builds"
               + ("" if found else "  WRONG ANSWER"))
        root = fx.make_regress_series(work / "patches", src, work)
        old_patches = os.environ.get("HARNESS_PATCHES")
        os.environ["HARNESS_PATCHES"] = str(root)
        try:
            seconds, outcome = timed(lambda: bisect_run.bisect_series(
                "regress", fx.PROBE, "default", (), work / "series.jsonl", options=opts))
        finally:
            if old_patches is None:
                os.environ.pop("HARNESS_PATCHES", None)
            else:
                os.environ["HARNESS_PATCHES"] = old_patches
        found = (outcome.first_bad is not None
                 and outcome.first_bad.id == "regress/0003-rcfs-rmdir-ignores-tasks.patch")
        record("bisect series (5 candidates)", seconds,
               f"5 candidates, {len(outcome.steps)} steps, {outcome.builds} builds"
               + ("" if found else "  WRONG ANSWER"))
    finally:
        os.chdir(old_cwd)
        cache.remove_tree(work)


def bench_image() -> None:
    """Guest image: cold (userland compiled from the Debian sources) and warm (cached)."""
    from harness import image

    recipe = image.resolve_recipe("default")
    with tempfile.TemporaryDirectory(prefix="harness-bench-cache-") as tmp:
        cold_cache = Path(tmp)
        downloads = cache.root() / "downloads" / "debian"
        if downloads.is_dir():  # the Debian sources themselves are not what we measure
            shutil.copytree(downloads, cold_cache / "downloads" / "debian")
        previous = os.environ.get("HARNESS_CACHE")
        os.environ["HARNESS_CACHE"] = str(cold_cache)
        try:
            seconds, _ = timed(lambda: image.build_image(recipe))
            record("image cold (busybox, dropbear, probe)", seconds)
            seconds, _ = timed(lambda: image.build_image(recipe))
            record("image warm", seconds, "cache hit")
        finally:
            if previous is None:
                os.environ.pop("HARNESS_CACHE", None)
            else:
                os.environ["HARNESS_CACHE"] = previous


def _vm_wait_share(results_dir: Path) -> tuple[float, float]:
    """(seconds tests waited for VMs, session wall seconds), summed over the run's cells."""
    from harness.results.session import SessionRecords

    waited = wall = 0.0
    for records in sorted(results_dir.glob("cells/*/records.json")):
        session = SessionRecords.load(records)
        waited += sum(k.vm_wait_seconds for k in session.kernels)
        wall += session.wall_seconds or 0.0
    return waited, wall


def bench_suite(runs: int = 20) -> None:
    """Warm rcfs suite time per kernel cell (kernels and image cached) with the share of it
    spent waiting for VMs; then warm `make test-kernel` as a distribution."""
    from harness import results
    from harness.run import matrix as testrun
    from harness.run import target

    for cell in testrun.load_matrix():
        target.prepare(target.KernelSpec(cell.config, cell.series))  # built beforehand: not measured
        with tempfile.TemporaryDirectory(prefix="harness-bench-results-") as tmp:
            start = time.monotonic()
            path, code = testrun.run([cell], results_parent=Path(tmp))
            seconds = time.monotonic() - start
            counts = results.load_summary(path).counts()
            waited, wall = _vm_wait_share(path)
            share = f", {100 * waited / wall:.0f}% of it waiting for VMs" if wall else ""
            record(f"suite {cell.label} (warm)", seconds,
                   f"{counts['tests']} tests, {counts['XFAIL']} xfail, exit {code}{share}")
    times: list[float] = []
    shares: list[float] = []
    for _ in range(runs):
        before = set((REPO / "results").glob("*"))
        seconds, status = timed(lambda: subprocess.run(["make", "-s", "test-kernel"], cwd=REPO,
                                                       check=False, capture_output=True).returncode)
        times.append(seconds)
        new = sorted(set((REPO / "results").glob("*")) - before)
        if new:
            waited, wall = _vm_wait_share(new[-1])
            if wall:
                shares.append(waited / wall)
            cache.remove_tree(new[-1])
        if status != 0:
            print(f"   make test-kernel exited {status}", flush=True)
    record_distribution("make test-kernel (warm)", times)
    if shares:
        record("make test-kernel: share waiting for VMs", statistics.median(shares),
               "median fraction of the cells' wall time (both cells run at once)")


BENCHES: dict[str, Callable[[], None]] = {
    "build": bench_build, "image": bench_image, "boot": bench_boot, "ssh": bench_ssh, "change": bench_change,
    "suite": bench_suite, "bisect": bench_bisect,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--json", type=Path, default=REPO / "results" / "bench.json")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = parser.parse_args()
    print(f"{'benchmark':34} {'time':>10}")
    for name in args.only or list(BENCHES):
        BENCHES[name]()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": RESULTS, "when": time.strftime("%F %T")}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
