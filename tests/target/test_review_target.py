"""Issue 15 on the real tree: `harness review` of the seed thread, as posted and with the repairs.

One test (it builds four kernels the first time; later runs find them cached).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness import resources
from harness.kernel.source import Source

SEED = resources.shipped("patches") / "rcfs" / "seed" / "rcfs-core-patch-thread.txt"


def _review(tmp_path: Path, name: str, *args: str) -> tuple[int, str, Path]:
    parent = tmp_path / name
    done = subprocess.run([sys.executable, "-m", "harness", "review", str(SEED), "--results", str(parent),
                           *args], capture_output=True, text=True, timeout=3600, check=False)
    (results,) = parent.iterdir()
    return done.returncode, (results / "review.txt").read_text(), results


def test_review_of_the_seed_as_posted_and_repaired(kernel_source: Source, tmp_path: Path) -> None:
    code, text, _ = _review(tmp_path, "posted")
    assert code == 1, text
    assert "The patch does not build" in text
    for quoted, error in [('> + char *token, *o = opts ? "all";',
                           "kernel/rcfs.c:198:32: error: expected ':' before ';' token"),
                          ("> + sort(pidarray, npids, sizeof(pid_t), cmppid, NULL);",
                           "kernel/rcfs.c:428:39: error: 'cmppid' undeclared")]:
        section = text[text.index("Build problem"):]
        section = section[section.index(error):]  # its header names the error
        section = section[:section.index("\n\n", section.index("gcc says:"))]
        # the hunk quoted down to the line, then the compiler's words
        assert section.index(quoted) < section.index("gcc says:") < section.index(f"  {error}")
    assert "init/Kconfig:249: unknown option \"Say\"" in text  # what stops the configuration first

    code, text, results = _review(tmp_path, "repaired", "--repair", "rcfs")
    assert code == 1, text
    sections = re.findall(r"^Bug (\d+): ", text, re.M)
    assert len(sections) >= 7 and sections == [str(n) for n in range(1, len(sections) + 1)]
    for section in text.split("\nBug ")[1:]:
        assert "What happened:" in section and "What was expected:" in section
        assert "\n> @@ " in section or "(no line of the patch could be tied to it)" in section
    for title in ("tasks write: non-numeric input fails with EIO instead of EINVAL",
                  "a container a task has left stays busy: rmdir is EBUSY forever",
                  "kernel oops in rcfs_tasks_read()"):
        assert title in text
    assert "> + return -EIO;" in text
    scripts = sorted((results / "repro").glob("*.sh"))
    assert len(scripts) >= len(sections)
    assert all(s.read_text().startswith("#!/bin/sh\n") for s in scripts)
    page = (results / "index.html").read_text()
    assert page.index('id="bugs"') < page.index('id="matrix"')
    assert page.count('class="bug"') == len(sections)
