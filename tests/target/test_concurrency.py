"""Two harness processes at once on the same cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import cache
from harness.kernel import build, config, patches, source
from harness.kernel.source import Source
from harness.run import target

REPO = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, "-m", "harness"]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*HARNESS, *args], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str, str]]:
    results: list[tuple[int, str, str]] = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def test_two_runs_at_once(kernel_source: Source) -> None:
    target.prepare(target.KernelSpec("default", "rcfs"))  # cached, so both only boot
    results = finish([start("run", "--", "uname", "-r") for _ in range(2)], timeout=300)
    for code, out, err in results:
        assert (code, out) == (0, "2.6.20\n"), err[-2000:]


def test_two_builds_of_one_new_key_build_once(kernel_source: Source) -> None:
    overrides = ["CONFIG_MAX_RC_HIERARCHIES=6"]
    series = patches.load_series("rcfs")
    request = build.BuildRequest(
        source=source.resolve(None, allow_download=False), series=series,
        config=config.render("default", series_chain=series.chain, overrides=overrides))
    key, entry = build.entry_dir(request, build.detect_toolchain())
    args = ["build", "--config", "default", "--set", overrides[0]]
    with cache.lock(f"build-{key}"):
        cache.remove_tree(entry)
    try:
        results = finish([start(*args) for _ in range(2)], timeout=900)
        for code, _, err in results:
            assert code == 0, err[-3000:]
        paths = {out.strip() for _, out, _ in results}
        assert len(paths) == 1 and Path(paths.pop()).is_file()
        # one built it, the other waited on the entry's lock and found it cached
        states = sorted("cached" if "harness: cached," in err else
                        "built" if "harness: built in " in err else err for _, _, err in results)
        assert states == ["built", "cached"], states
        log = (entry / "build.log").read_text(errors="replace")
        assert log.count("# harness build ") == 1 and log.count(" bzImage\n") == 1
    finally:
        with cache.lock(f"build-{key}"):
            cache.remove_tree(entry)
