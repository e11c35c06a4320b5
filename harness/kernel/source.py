"""Source stage: find a Linux 2.6.20 tree and cache it, pristine and read-only.

Resolution order (first that applies wins):

1. an explicit source, ``--kernel-src`` or ``$HARNESS_KERNEL_SRC``: a
   directory, a ``.tar.gz``/``.tar.bz2``/``.tar.xz`` tarball, or a git
   repository given as ``PATH@REF``;
2. the verified ``linux-2.6.20.tar.bz2`` already in the cache;
3. a pristine tree already in the cache (the most recently used one), so a
   source given once keeps working without repeating it;
4. a download of ``linux-2.6.20.tar.bz2`` from kernel.org, resumable and
   checked against the pinned sha256.

Each pristine tree lives in ``sources/<id>/tree`` and is never written to
again: builds get hard-linked copies (see :mod:`harness.kernel.build`).  Its
``source.json`` is checked whenever it is read (a JSON object naming the
entry's own id, an origin and a version); a damaged entry is moved aside with
one line and made anew (or, found only as "the most recent", no longer used).
A full disk while unpacking is one :class:`DiskFull` line; the staging
directory is removed, so nothing half-unpacked is ever used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from harness import archive, cache, proc, progress
from harness.errors import DiskFull, InputError, StageError

VERSION = "2.6.20"
TARBALL = "linux-2.6.20.tar.bz2"
TARBALL_URL = "https://cdn.kernel.org/pub/linux/kernel/v2.6/" + TARBALL
TARBALL_SHA256 = "2c14ada1ac7d272e03b430d3a530d60fc9ec69cc8252382aa049afba7d2b8558"
ENV_VAR = "HARNESS_KERNEL_SRC"



def how_to_provide() -> str:
    """The one-line explanation of the three ways to give the harness a source."""
    return (
        "no Linux 2.6.20 source available. Provide one of: "
        f"(1) --kernel-src or ${ENV_VAR} = a 2.6.20 directory, a linux-2.6.20.tar.gz/.bz2/.xz "
        "or a git repository as PATH@REF; "
        f"(2) {TARBALL} (sha256 {TARBALL_SHA256[:12]}...) placed in {_downloads_dir()}; "
        f"(3) network access to {TARBALL_URL} for the automatic download"
    )

Kind = Literal["dir", "tarball", "git"]
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: the names of source entries (anything else in sources/ is staging or moved aside)
ENTRY_NAME = re.compile(r"^(?:tar|dir|git)-[0-9a-f]{16}$")


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked for, validated but not yet fetched."""

    kind: Kind
    path: Path
    ref: str | None = None

    def describe(self) -> str:
        return f"{self.path}@{self.ref}" if self.ref else str(self.path)


@dataclass(frozen=True)
class Source:
    """A pristine, read-only 2.6.20 tree in the cache."""

    id: str
    tree: Path
    origin: str
    version: str = VERSION


def parse_spec(text: str) -> SourceSpec:
    """Validate a ``--kernel-src`` value; raise :class:`InputError` if unusable."""
    if not text.strip():
        raise InputError("--kernel-src: empty value; expected a directory, a tarball or PATH@REF")
    if "@" in text and not Path(text).exists():
        path_text, ref = text.rsplit("@", 1)
        path = Path(path_text).expanduser()
        if not ref:
            raise InputError(f"--kernel-src {text!r}: empty git REF after '@'")
        if not path.exists():
            raise InputError(f"--kernel-src {text!r}: git repository {path} does not exist")
        return SourceSpec("git", path.absolute(), ref)
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(
            f"--kernel-src {text!r}: no such file or directory; expected a 2.6.20 directory, "
            "a .tar.gz/.tar.bz2/.tar.xz tarball or a git repository as PATH@REF"
        )
    if path.is_dir():
        return SourceSpec("dir", path.absolute())
    if path.name.endswith(TAR_SUFFIXES):
        return SourceSpec("tarball", path.absolute())
    raise InputError(
        f"--kernel-src {text!r}: not a directory and not a .tar.gz/.tar.bz2/.tar.xz tarball"
    )


def tree_version(tree: Path) -> str | None:
    """The kernel version a top-level Makefile declares, e.g. ``2.6.20``."""
    try:
        head = (tree / "Makefile").read_text(errors="replace")[:2000]
    except OSError:
        return None
    pattern = r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)[ \t]*=[ \t]*(\S*)"
    fields: dict[str, str] = dict(re.findall(pattern, head, re.M))
    if not {"VERSION", "PATCHLEVEL", "SUBLEVEL"} <= fields.keys():
        return None
    version = f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields['SUBLEVEL']}"
    return version + fields.get("EXTRAVERSION", "")


def _sources_dir() -> Path:
    return cache.subdir("sources")


def _downloads_dir() -> Path:
    return cache.subdir("downloads")


def _dir_fingerprint(path: Path) -> str:
    """Cheap identity of a directory tree: relative paths, sizes and mtimes."""
    parts: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            parts.append(f"{os.path.relpath(p, path)}\0{st.st_size}\0{int(st.st_mtime)}")
    return cache.digest(*parts)


def _git_commit(spec: SourceSpec) -> str:
    result = proc.run(
        ["git", "-C", spec.path, "rev-parse", "--verify", "--quiet", f"{spec.ref}^{{commit}}"],
        check=False,
    )
    if result.returncode != 0:
        raise InputError(
            f"--kernel-src {spec.describe()}: REF {spec.ref!r} is not a commit in {spec.path}"
        )
    return result.stdout.strip()


def _record(src_dir: Path) -> None:
    """Mark a cached source as the most recently used one."""
    meta = src_dir / "source.json"
    if meta.exists():
        os.utime(meta)


def _problem(src_dir: Path) -> str | None:
    """Why the entry ``src_dir`` cannot be trusted, or None if it can."""
    try:
        data = json.loads((src_dir / "source.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return "source.json is unreadable or not JSON"
    if not isinstance(data, dict):
        return f"source.json holds a JSON {type(data).__name__}, expected an object"
    if data.get("id") != src_dir.name:
        return f"source.json is for {data.get('id')!r}, not for this entry"
    if not isinstance(data.get("origin"), str) or not isinstance(data.get("version"), str):
        return "source.json lacks its origin or version"
    if not (src_dir / "tree").is_dir() or (src_dir / "tree").is_symlink():
        return "its tree is missing"
    return None


def _load_cached(src_dir: Path) -> Source | None:
    """The source in entry ``src_dir`` (call under its lock), None if there is none.

    A damaged entry is moved aside, with one line on stderr, and None returned.
    """
    if not (src_dir / "source.json").exists() and not (src_dir / "tree").exists():
        return None
    problem = _problem(src_dir)
    if problem is not None:
        cache.quarantine(src_dir, f"damaged kernel source entry: {problem}")
        return None
    data = json.loads((src_dir / "source.json").read_text())
    return Source(id=src_dir.name, tree=src_dir / "tree", origin=data["origin"],
                  version=data["version"])


def _materialise(source_id: str, origin: str, fill: Callable[[Path], None]) -> Source:
    """Create ``sources/<id>`` with ``fill(stage_tree)`` unless it already exists."""
    src_dir = _sources_dir() / source_id
    with cache.lock(f"source-{source_id}"):
        cached = _load_cached(src_dir)
        if cached is not None:
            _record(src_dir)
            return cached
        with cache.staged_dir(src_dir) as stage:
            tree = stage / "tree"
            tree.mkdir()
            with progress.step(f"unpack kernel source ({origin})"), \
                    cache.disk_full_guard(src_dir.parent, f"unpacking the kernel source {origin}"):
                fill(tree)
            version = tree_version(tree)
            if version != VERSION:
                raise InputError(
                    f"kernel source {origin}: Makefile says version {version or 'unknown'}, "
                    f"expected {VERSION}"
                )
            cache.make_read_only(tree)
            source = Source(id=source_id, tree=src_dir / "tree", origin=origin)
            cache.write_json_atomic(stage / "source.json", {**asdict(source), "tree": str(source.tree)})
    return source


def _strip_single_top(tree: Path) -> None:
    """Tarballs hold ``linux-2.6.20/...``: move that folder's contents up."""
    entries = list(tree.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not (tree / "Makefile").exists():
        top = entries[0]
        for child in top.iterdir():
            os.rename(child, tree / child.name)
        top.rmdir()


def _from_tarball(path: Path, sha256: str | None = None) -> Source:
    digest = sha256 or cache.file_sha256(path)

    def fill(tree: Path) -> None:
        archive.safe_extract_tar(path, tree)
        _strip_single_top(tree)

    return _materialise(f"tar-{digest[:16]}", str(path), fill)


def _from_dir(path: Path) -> Source:
    version = tree_version(path)
    if version != VERSION:
        raise InputError(
            f"--kernel-src {path}: not a Linux {VERSION} tree "
            f"(Makefile says {version or 'nothing readable'})"
        )

    def fill(tree: Path) -> None:
        shutil.copytree(path, tree, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git"))

    return _materialise(f"dir-{_dir_fingerprint(path)}", str(path), fill)


def _from_git(spec: SourceSpec) -> Source:
    commit = _git_commit(spec)

    def fill(tree: Path) -> None:
        tar = tree.parent / "git-archive.tar"
        result = proc.run(["git", "-C", spec.path, "archive", "--format=tar", "-o", tar, commit],
                          check=False)
        if not result.ok:
            tar.unlink(missing_ok=True)
            full = proc.enospc_line(result.stderr)
            if full is not None:
                raise DiskFull(_sources_dir(), f"exporting {commit[:12]} from {spec.path} ({full})")
            raise StageError(f"git archive {commit[:12]} in {spec.path} failed: "
                             f"{' | '.join(result.stderr.strip().splitlines()[-3:])}", stage="source")
        try:
            archive.safe_extract_tar(tar, tree)
        finally:
            tar.unlink(missing_ok=True)

    return _materialise(f"git-{commit[:16]}", f"{spec.describe()} ({commit[:12]})", fill)


def _verified_tarball() -> Path | None:
    """The cached tarball if its checksum is right; a bad one is moved aside (and None returned,
    so the next way of getting a source is tried: a cached tree, a fresh download)."""
    path = _downloads_dir() / TARBALL
    if not path.is_file():
        return None
    actual = cache.file_sha256(path)
    if actual == TARBALL_SHA256:
        return path
    cache.quarantine(path, f"sha256 {actual[:16]}... does not match the pinned "
                           f"{TARBALL_SHA256[:16]}... (corrupted or truncated)")
    return None


def _most_recent_cached() -> Source | None:
    candidates: list[tuple[float, Source]] = []
    for src_dir in _sources_dir().iterdir():
        if not ENTRY_NAME.match(src_dir.name):
            continue  # a staging directory, or an entry moved aside
        with cache.lock(f"source-{src_dir.name}", f"the kernel source {src_dir.name}"):
            cached = _load_cached(src_dir)
        if cached is not None and cached.version == VERSION:
            candidates.append(((src_dir / "source.json").stat().st_mtime, cached))
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


def download(
    url: str = TARBALL_URL,
    dest: Path | None = None,
    sha256: str = TARBALL_SHA256,
    timeout: float = 20.0,
) -> Path:
    """Download (resuming a ``.part`` file) and verify the pinned tarball."""
    dest = dest or _downloads_dir() / TARBALL
    part = dest.with_name(dest.name + ".part")
    with cache.lock("download-" + dest.name):
        if dest.exists():
            return dest
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise StageError(
                how_to_provide() + f" (download failed: {exc})"
            ) from None
        with response, progress.step(f"download {url}") as step:
            if offset and response.status != 206:
                offset = 0  # server ignored the range: start over
            total = int(response.headers.get("Content-Length") or 0) + offset
            with part.open("ab" if offset else "wb") as out:
                done = offset
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    pct = f" {100 * done // total}%" if total else ""
                    step.update(f"{done >> 20} MiB{pct}")
        actual = cache.file_sha256(part)
        if actual != sha256:
            cache.quarantine(part, "not the pinned download")
            raise StageError(
                f"{url}: downloaded file has sha256 {actual[:16]}..., expected "
                f"{sha256[:16]}...; kept aside for inspection", stage="source"
            )
        os.rename(part, dest)
    return dest


def resolve(explicit: str | None = None, *, allow_download: bool = True) -> Source:
    """Find (and cache) the kernel source, following the documented order."""
    text = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    if text is not None:
        spec = parse_spec(text)
        if spec.kind == "dir":
            return _from_dir(spec.path)
        if spec.kind == "tarball":
            return _from_tarball(spec.path)
        return _from_git(spec)
    tarball = _verified_tarball()
    if tarball is not None:
        return _from_tarball(tarball, TARBALL_SHA256)
    cached = _most_recent_cached()
    if cached is not None:
        _record(cached.tree.parent)
        return cached
    if not allow_download:
        raise StageError(how_to_provide())
    return _from_tarball(download(), TARBALL_SHA256)
