"""``harness report merge``: combine the results directories of shards into one."""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TypeVar

from harness import cache
from harness.errors import InputError
from harness.results.records import (
    ORIGIN,
    SUMMARY_JSON,
    BootRecord,
    BuildRecord,
    StageRecord,
    Summary,
    load_summary,
    worst,
)
from harness.results.resultsdir import ResultsDir, add_test, unique_path

log = logging.getLogger("harness.results")
_Record = TypeVar("_Record", BuildRecord, BootRecord, StageRecord)


def merge(result_dirs: list[Path], out: Path) -> Summary:
    """Combine shard results directories into ``out`` (written whole, atomically).

    Checkouts and builds are united by id (a build in several shards keeps
    its worst status, a build not run in one shard takes the other's); boots
    and stages are all kept; a test seen twice on the same build keeps its
    worst status, with a warning.  The result is interrupted when a shard
    was.  Log files are copied, renamed when two shards have different files
    under one name.
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
    with cache.disk_full_guard(out.parent, "merging results"):
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
    summary.interrupted = summary.interrupted or shard.interrupted
    for c in shard.checkouts:
        old = next((x for x in summary.checkouts if x.id == c.id), None)
        if old is None:
            summary.checkouts.append(c)
        elif old != c:
            log.warning("%s: checkout %s differs from another shard's; keeping the first", shard_dir, c.id)
    for b in shard.builds:
        b.log_path = _merge_log(merged.path, shard_dir, b.log_path)
        prev = _keep_worst(summary.builds, b)
        if prev is not None and prev.status != b.status and "MISS" not in (prev.status, b.status):
            log.warning("%s: build %s is %s here and %s in another shard: keeping %s", shard_dir,
                        b.kernel, b.status, prev.status, worst(prev.status, b.status))
    for boot in shard.boots:
        boot.console_log_path = _merge_log(merged.path, shard_dir, boot.console_log_path)
        _keep_worst(summary.boots, boot)
    for st in shard.stages:
        st.log_path = _merge_log(merged.path, shard_dir, st.log_path)
        _keep_worst(summary.stages, st)
    for t in shard.tests:
        add_test(summary.tests, t, where=str(shard_dir))


def _keep_worst(records: list[_Record], new: _Record) -> _Record | None:
    """Add ``new`` to ``records``, or put it in place of the record of its id when its status is worse
    (on a tie the first stays); return the record of its id that was there before, if any."""
    old = next((x for x in records if x.id == new.id), None)
    if old is None:
        records.append(new)
    elif old.status != new.status and worst(old.status, new.status) == new.status:
        records[records.index(old)] = new
    return old


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
        dest = unique_path(dest)
    cache.copy_atomic(src, dest)
    return dest.relative_to(out_dir).as_posix()
