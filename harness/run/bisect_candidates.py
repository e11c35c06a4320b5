"""Bisect candidates: the prefixes of a patch series, the commits of a git range, exported trees.

* :func:`series_candidates`: index ``i`` = the first ``i`` patches of the
  series' *own* patches on top of its whole base chain (index 0 = the base
  chain only).  ``Candidate.prefix`` is the count to give ``Series.prefix()``
  (:func:`series_prefix`).
* :func:`git_candidates`: ``good`` followed by
  ``git rev-list --reverse --first-parent good..bad``, with their subjects.

Git trees: :func:`git_worktree` exports a commit with ``git archive`` into a
temporary directory inside the cache and removes it afterwards.  It was
chosen over the alternatives because:

* ``git worktree add`` writes into the user's repository (``.git/worktrees``
  metadata, left behind stale when the harness is killed); ``git archive`` only
  reads the repository, and also works on a bare one;
* ``source.resolve("PATH@SHA")`` refuses most commits of a bisect range (its
  version check wants exactly ``2.6.20``, not ``2.6.20-rc3``), and would keep
  one full pristine tree per step in the cache, each with its own build entry,
  i.e. a full kernel build per step;
* the directory is inside the cache, so the build stage's hard-linked copy
  (``cp -al``) works (hard links cannot cross file systems, a ``/tmp`` tree
  would fail there).

An export takes seconds next to the minutes of a build.  File times are set
to the export time (``git archive`` stamps every file with the commit time):
together with :func:`git_source`, which gives every commit of one repository
the same ``Source.id`` (so every step reuses one build entry, whose inputs
still record the full sha as the origin, so no stale build is ever reused as
a cache hit), the build stage's content-comparing tree sync makes each step
an incremental ``make`` that recompiles exactly the files that differ, also
when the bisect moves back to an older commit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import archive, cache, proc
from harness.errors import DiskFull, InputError, StageError
from harness.kernel.patches import Series
from harness.kernel.source import Source, tree_version
from harness.run.bisect_record import Candidate

# --- candidates: a patch series --------------------------------------------------


def series_candidates(series: Series) -> list[Candidate]:
    """Candidate ``i`` = the base chain plus the first ``i`` of the series' own patches."""
    own = series.own_patches()
    base_count = len(series.patches) - len(own)
    if series.patches[base_count:] != own:
        raise InputError(f"series {series.name!r}: its own patches do not come after its base chain")
    bases = ", ".join(series.chain[:-1]) or "none, pristine source"
    candidates = [Candidate(
        index=0,
        id=f"{series.name}/(none)",
        subject=f"no patch of {series.name} (base chain: {bases})",
        prefix=base_count,
        digest=series.prefix(base_count).digest(),
        label=f"the empty prefix of {series.name} (base chain: {bases})",
    )]
    for i, patch in enumerate(own, 1):
        candidates.append(Candidate(
            index=i,
            id=f"{patch.series}/{patch.name}",
            subject=patch.subject,
            prefix=base_count + i,
            digest=series.prefix(base_count + i).digest(),
            label=f"the full series {series.name}" if i == len(own) else "",
        ))
    return candidates


def series_prefix(series: Series, candidate: Candidate) -> Series:
    """The series to build for ``candidate`` (from :func:`series_candidates`)."""
    if candidate.prefix is None:
        raise ValueError(f"candidate {candidate.id} is not a series candidate")
    return series.prefix(candidate.prefix)


# --- candidates: git history -----------------------------------------------------


def _git(repo: Path, *args: str, check: bool = True) -> proc.Completed:
    return proc.run(["git", "-C", repo, *args], check=check, what=f"git {args[0]}")


def _check_repo(repo: Path) -> None:
    if not repo.is_dir():
        raise InputError(f"--git {repo}: no such directory; expected a git repository")
    if not _git(repo, "rev-parse", "--git-dir", check=False).ok:
        raise InputError(f"--git {repo}: not a git repository")


def resolve_commit(repo: Path, ref: str, option: str = "REF") -> str:
    """The full sha of commit ``ref`` in ``repo``; InputError if it names no commit."""
    if not ref or ref.startswith("-") or any(ch.isspace() for ch in ref):
        raise InputError(f"{option} {ref!r} is not a commit in {repo}")
    result = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not result.ok:
        raise InputError(f"{option} {ref!r} is not a commit in {repo}")
    return result.stdout.strip()


def git_candidates(repo: Path, good: str, bad: str) -> list[Candidate]:
    """``good``, then each first-parent commit of ``good..bad``, oldest first."""
    _check_repo(repo)
    good_sha = resolve_commit(repo, good, "--good REF")
    bad_sha = resolve_commit(repo, bad, "--bad REF")
    good_name, bad_name = f"--good {good} ({good_sha[:12]})", f"--bad {bad} ({bad_sha[:12]})"
    if good_sha == bad_sha:
        raise InputError(f"{good_name} and {bad_name} are the same commit: nothing to bisect")
    ancestor = _git(repo, "merge-base", "--is-ancestor", good_sha, bad_sha, check=False)
    if ancestor.returncode not in (0, 1):
        raise StageError(f"git merge-base failed in {repo}: {ancestor.stderr.strip()}")
    if ancestor.returncode == 1:
        swapped = _git(repo, "merge-base", "--is-ancestor", bad_sha, good_sha, check=False).ok
        hint = " (it is the other way round: swap --good and --bad?)" if swapped else ""
        raise InputError(f"{good_name} is not an ancestor of {bad_name}{hint}")
    listing = _git(repo, "log", "--no-show-signature", "--first-parent", "--reverse",
                   "--format=%H%x1f%P%x1f%s", f"{good_sha}..{bad_sha}")
    rows = [line.split("\x1f", 2) for line in listing.stdout.splitlines() if line.strip()]
    if not rows or rows[-1][0] != bad_sha:
        raise StageError(f"git log {good_sha[:12]}..{bad_sha[:12]} in {repo} gave an unexpected listing")
    first_parent = rows[0][1].split()[0] if rows[0][1].split() else ""
    if first_parent != good_sha:
        raise InputError(
            f"{good_name} is not on the first-parent history of {bad_name} (it was merged in from "
            f"a side branch); give a --good on that history, e.g. {first_parent[:12] or 'a root commit'}"
        )
    good_subject = _git(repo, "log", "--no-show-signature", "-1", "--format=%s", good_sha).stdout.strip()
    candidates = [Candidate(0, good_sha, good_subject, digest=good_sha, label=good_name)]
    for i, (sha, _parents, subject) in enumerate(rows, 1):
        label = bad_name if i == len(rows) else ""
        candidates.append(Candidate(i, sha, subject, digest=sha, label=label))
    return candidates


def _worktrees_dir() -> Path:
    return cache.subdir("worktrees")


def _remove_stale_worktrees(parent: Path) -> None:
    """Remove trees left by harness processes that were killed."""
    for entry in parent.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            cache.remove_tree(entry)
        except PermissionError:
            pass


def _touch_all(tree: Path, when: float) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


@contextlib.contextmanager
def git_worktree(repo: Path, commit: str) -> Iterator[Path]:
    """A read-only tree of ``commit``, exported from ``repo`` without touching it.

    The tree lives in ``$HARNESS_CACHE/worktrees/`` (same file system as the
    build entries, for hard links) and is removed when the block ends.  Every
    file carries the export time, not the commit time (see the module
    docstring).
    """
    _check_repo(repo)
    sha = resolve_commit(repo, commit, "commit")
    parent = _worktrees_dir()
    _remove_stale_worktrees(parent)
    doing = f"exporting {sha[:12]} from {repo}"
    with cache.disk_full_guard(parent, doing):
        holder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{sha[:12]}-", dir=parent))
    try:
        with cache.disk_full_guard(parent, doing):
            tree = _export(repo, sha, holder, doing)
        yield tree
    finally:
        cache.remove_tree(holder)


def _export(repo: Path, sha: str, holder: Path, doing: str) -> Path:
    tar = holder / "export.tar"
    result = _git(repo, "archive", "--format=tar", "-o", str(tar), sha, check=False)
    if not result.ok:
        full = proc.enospc_line(result.stderr)
        if full is not None:
            raise DiskFull(holder.parent, f"{doing} ({full})")
        raise StageError(f"git archive {sha[:12]} in {repo} failed: "
                         f"{' | '.join(result.stderr.strip().splitlines()[-3:])}", stage="source")
    tree = holder / "tree"
    archive.safe_extract_tar(tar, tree)
    tar.unlink()
    _touch_all(tree, time.time())
    cache.make_read_only(tree)
    return tree


@contextlib.contextmanager
def git_source(repo: Path, commit: str) -> Iterator[Source]:
    """A :class:`Source` for ``commit``, to build one git bisect step.

    Every commit of ``repo`` gets the same ``Source.id``, so all steps share one
    build entry and rebuild incrementally; the origin names the full sha, and
    it is part of the build inputs, so a build is a cache hit only for the
    same commit.
    """
    sha = resolve_commit(repo, commit, "commit")
    with git_worktree(repo, sha) as tree:
        yield Source(
            id=f"bisect-{cache.digest(str(repo.resolve()))}",
            tree=tree,
            origin=f"{repo.resolve()}@{sha}",
            version=tree_version(tree) or "unknown",
        )
