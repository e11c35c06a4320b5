"""Issue 2 on the real 2.6.20 tree: builds, config results, cache hits, early refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cache
from harness.errors import InputError
from harness.kernel import build, config, patches
from harness.kernel.source import Source


def request(src: Source, name: str, overrides: tuple[str, ...] = (), series: str = "rcfs"
            ) -> build.BuildRequest:
    s = patches.load_series(series)
    return build.BuildRequest(src, s, config.render(name, series_chain=s.chain,
                                                    overrides=list(overrides)))


def test_default_builds_with_rcfs_limits(kernel_source: Source) -> None:
    result = build.build(request(kernel_source, "default"))
    assert result.bzimage.stat().st_size > 100_000
    values = config.read_dotconfig(result.dotconfig.read_text())
    assert values["CONFIG_RCFS"] == "y"
    assert values["CONFIG_MAX_RC_SUBSYS"] == "8"
    assert values["CONFIG_MAX_RC_HIERARCHIES"] == "4"
    assert "rcfs_init" in result.system_map.read_text()


def test_second_identical_build_is_a_cache_hit(kernel_source: Source) -> None:
    first = build.build(request(kernel_source, "default"))
    log_before = first.log.read_text()
    meta_before = first.meta_path.read_text()
    again = build.build(request(kernel_source, "default"))
    assert again.cached and again.key == first.key
    assert again.log.read_text() == log_before  # no make ran
    assert again.meta_path.read_text() == meta_before


def test_norcfs_builds_without_rcfs(kernel_source: Source) -> None:
    result = build.build(request(kernel_source, "norcfs"))
    values = config.read_dotconfig(result.dotconfig.read_text())
    assert values.get("CONFIG_RCFS", "n") == "n"
    assert "rcfs_init" not in result.system_map.read_text()


@pytest.mark.parametrize("value", ["0", "300"])
def test_out_of_range_subsys_is_refused_before_make(kernel_source: Source, value: str) -> None:
    before = sorted(p.name for p in (cache.root() / "builds").glob("*"))
    with pytest.raises(InputError, match=rf"CONFIG_MAX_RC_SUBSYS={value}: out of range, allowed 1\.\.255"):
        build.build(request(kernel_source, "default", (f"CONFIG_MAX_RC_SUBSYS={value}",)))
    assert sorted(p.name for p in (cache.root() / "builds").glob("*")) == before


def test_cli_build_prints_bzimage(kernel_source: Source) -> None:
    out = subprocess.run([sys.executable, "-m", "harness", "build", "--config", "default"],
                         capture_output=True, text=True, check=True)
    path = Path(out.stdout.strip())
    assert path.name == "bzImage" and path.is_file()
    assert "cached" in out.stderr


def test_cli_refuses_out_of_range_with_exit_2(kernel_source: Source) -> None:
    out = subprocess.run([sys.executable, "-m", "harness", "build", "--set",
                          "CONFIG_MAX_RC_SUBSYS=0"], capture_output=True, text=True)
    assert out.returncode == 2
    # progress lines ("==> prepare tree ...") appear when a step is slow; the error is one line
    lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("==> ")]
    assert len(lines) == 1 and "allowed 1..255" in lines[0], out.stderr


def test_cli_refuses_a_set_value_that_would_run_a_command(kernel_source: Source, tmp_path: Path) -> None:
    """Issue 12: CONFIG_LOCALVERSION reaches $(shell ...) in kbuild; `$$(cmd)` once ran cmd on the host."""
    marker = tmp_path / "ran"
    before = sorted(p.name for p in (cache.root() / "builds").glob("*"))
    out = subprocess.run([sys.executable, "-m", "harness", "build", "--set",
                          f'CONFIG_LOCALVERSION="$$(id>{marker})"'], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "letters, digits, spaces" in lines[0], out.stderr
    assert not marker.exists()
    assert sorted(p.name for p in (cache.root() / "builds").glob("*")) == before


def test_a_full_disk_while_unpacking_is_one_line(kernel_source: Source, tmp_path: Path) -> None:
    """Issue 12: a cache on a small file system; the 276 MB tree does not fit in 64 MB."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        env = {**os.environ, "HARNESS_CACHE": str(small / "cache")}
        env.pop("HARNESS_KERNEL_SRC", None)
        out = subprocess.run([sys.executable, "-m", "harness", "source", "--kernel-src",
                              str(kernel_source.tree)], capture_output=True, text=True, env=env,
                             timeout=600)
        errors = [line for line in out.stderr.splitlines() if not line.startswith("==> ")]
        assert out.returncode == 2, out.stderr[-2000:]
        assert len(errors) == 1, out.stderr[-2000:]
        assert errors[0].startswith(f"harness: error: {small / 'cache' / 'sources'}: no space left "
                                    f"on device while unpacking the kernel source {kernel_source.tree}")
        assert not any((small / "cache" / "sources").iterdir()), "a half-unpacked source was kept"
    finally:
        subprocess.run(["umount", str(small)], check=True)
