"""The importer on the real 2.6.20 tree: patches/rcfs/0001 is exactly what it produces."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness import cli, resources
from harness.kernel.importer import import_patch
from harness.kernel.source import Source

REPO = Path(__file__).resolve().parent.parent.parent
SERIES = resources.shipped("patches") / "rcfs"
SEED = SERIES / "seed" / "rcfs-core-patch-thread.txt"


def test_seed_against_real_tree_matches_series(
    kernel_source: Source, tmp_path: Path
) -> None:
    tree = kernel_source.tree
    seed_text = SEED.read_text()
    result = import_patch(seed_text, against=tree)
    (first,) = SERIES.glob("0001-*.patch")
    assert result.render().encode() == first.read_bytes()
    work = tmp_path / "tree"
    for rel in result.files:  # copy only what the series touches, then apply it in order
        if (tree / rel).exists():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tree / rel, work / rel)
    for name in (SERIES / "series").read_text().split():
        run = subprocess.run(
            ["patch", "-p1", "-F0", "-i", str(SERIES / name)],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "fuzz" not in run.stdout.lower() and "offset" not in run.stdout.lower()


def test_import_patch_cli_reproduces_0001(kernel_source: Source, tmp_path: Path) -> None:
    out = tmp_path / "0001.patch"
    status = cli.main(["import-patch", str(SEED), "-o", str(out), "--against", str(kernel_source.tree)])
    assert status == 0
    (first,) = SERIES.glob("0001-*.patch")
    assert out.read_bytes() == first.read_bytes()
