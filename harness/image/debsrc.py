"""Which Debian source versions an image is built from (newest apt offers in range), kept in downloads/."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cache, progress
from harness.errors import StageError
from harness.image import debversion
from harness.image.aptsrc import PrivateApt, SourceRecord, deb822_stanzas
from harness.image.recipe import Package, Recipe


@dataclass(frozen=True)
class DscFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class DebianSource:
    """One exact version of a Debian source package, complete and checked, in ``directory``."""

    name: str  # the recipe's package name (busybox, dropbear)
    source: str  # the Debian source package
    version: str  # the exact Debian version, epoch included
    directory: Path
    dsc: str  # the .dsc file name
    files: tuple[DscFile, ...]  # what the .dsc lists

    @property
    def upstream(self) -> str:
        return debversion.upstream(self.version)

    @property
    def orig(self) -> DscFile:
        """The upstream tarball (the only file that is built; Debian's patches are not applied)."""
        tarballs = [f for f in self.files if ".tar." in f.name and not f.name.endswith(".asc")]
        origs = [f for f in tarballs if ".orig.tar." in f.name] or [
            f for f in tarballs if ".debian.tar." not in f.name]
        if len(origs) != 1:
            raise StageError(f"{self.dsc}: expected one upstream tarball, found "
                             f"{', '.join(f.name for f in origs) or 'none'}", stage="image")
        return origs[0]

    @property
    def orig_path(self) -> Path:
        return self.directory / self.orig.name

    def meta(self) -> dict[str, Any]:
        """What image.json and userland.json record about it."""
        return {"package": self.source, "version": self.version, "orig": self.orig.name,
                "orig_sha256": self.orig.sha256}


def debian_downloads() -> Path:
    path = cache.subdir("downloads") / "debian"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _note(message: str) -> None:
    print(f"harness: {message}", file=sys.stderr, flush=True)


def parse_dsc(text: str) -> tuple[str, str, tuple[DscFile, ...]]:
    """(Source, Version, Checksums-Sha256 files) of a .dsc, clear-signed or not; ValueError if malformed."""
    lines = text.splitlines()
    if lines and lines[0].startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        body_start = lines.index("") + 1 if "" in lines else len(lines)
        end = next((i for i, line in enumerate(lines) if line.startswith("-----BEGIN PGP SIGNATURE")),
                   len(lines))
        lines = lines[body_start:end]
    stanzas = list(deb822_stanzas("\n".join(lines)))
    if not stanzas:
        raise ValueError("no fields")
    fields = dict(stanzas[0])
    files = []
    for line in fields.get("Checksums-Sha256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and len(parts[0]) == 64:
            files.append(DscFile(parts[2], parts[0]))
    if "Source" not in fields or "Version" not in fields or not files:
        raise ValueError("no Source, Version or Checksums-Sha256 field")
    debversion.split(fields["Version"])
    return fields["Source"], fields["Version"], tuple(files)


def dsc_name(source: str, version: str) -> str:
    return f"{source}_{version.split(':', 1)[-1]}.dsc"


def load_local(pkg: Package, dsc: Path) -> DebianSource | None:
    """The source ``dsc`` describes, if every file it lists is beside it with the right sha256.

    A file whose sha256 differs (damaged, or replaced) is moved aside with
    :func:`cache.quarantine`, so the next fetch makes it anew.
    """
    try:
        source, version, files = parse_dsc(dsc.read_text(errors="replace"))
    except (OSError, ValueError) as exc:
        if dsc.is_file():
            cache.quarantine(dsc, f"not a readable .dsc ({exc})")
        return None
    if source != pkg.source:
        return None
    complete = True
    for f in files:
        path = dsc.parent / f.name
        if not path.is_file():
            complete = False
            continue
        actual = cache.file_sha256(path)
        if actual != f.sha256:
            cache.quarantine(path, f"sha256 {actual} differs from {f.sha256} in {dsc.name}")
            complete = False
    if not complete:
        return None
    return DebianSource(pkg.name, source, version, dsc.parent, dsc.name, files)


def _by_version(versions: list[str]) -> list[str]:
    """Newest first."""
    return sorted(versions, key=functools.cmp_to_key(debversion.compare), reverse=True)


def newest_local(pkg: Package, dl: Path) -> DebianSource | None:
    """The newest complete source in ``dl`` whose upstream version the recipe admits."""
    candidates: dict[str, Path] = {}
    for dsc in dl.glob(f"{pkg.source}_*.dsc"):
        version = dsc.name[len(pkg.source) + 1:-len(".dsc")]
        if pkg.upstream.admits_debian(version):
            candidates[version] = dsc
    for version in _by_version(list(candidates)):
        found = load_local(pkg, candidates[version])
        if found is not None and pkg.upstream.admits_debian(found.version):
            return found
    return None


def _move_in(tmp: Path, dl: Path) -> None:
    for f in tmp.iterdir():
        if f.is_symlink():  # apt links files of file: URIs instead of copying them
            cache.copy_atomic(f.resolve(), dl / f.name)
            f.unlink()
        elif f.is_file():
            os.replace(f, dl / f.name)


def _last_error(result_stderr: str) -> str:
    lines = [line.strip() for line in result_stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines or ["no output"])[-1]


def download(pkg: Package, record: SourceRecord, dl: Path, apt: PrivateApt) -> DebianSource:
    """Fetch ``record`` with ``apt-get source --download-only`` (apt checks it) into ``dl``."""
    spec = f"{pkg.source}={record.version}"
    with cache.disk_full_guard(dl, f"downloading {spec}"), \
            tempfile.TemporaryDirectory(dir=dl, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        for name, _sha in record.files:  # apt checks these and keeps them if they match
            if (dl / name).is_file():
                try:
                    os.link(dl / name, tmp / name)
                except OSError:
                    shutil.copyfile(dl / name, tmp / name)
        with progress.step(f"download Debian source {spec}"):
            result = apt.download(pkg.source, record.version, tmp)
        if not result.ok:
            raise StageError(f"{pkg.name}: apt-get source {spec} failed (exit {result.returncode}): "
                             f"{_last_error(result.stderr)}", stage="image")
        _move_in(tmp, dl)
    found = load_local(pkg, dl / dsc_name(pkg.source, record.version))
    if found is None or found.version != record.version:
        raise StageError(f"{pkg.name}: apt-get source {spec} did not leave a complete "
                         f"{dsc_name(pkg.source, record.version)} in {dl}", stage="image")
    listed = dict(record.files)
    for f in (DscFile(found.dsc, listed.get(found.dsc, "")), *found.files):
        if f.name in listed and cache.file_sha256(dl / f.name) != listed[f.name]:
            bad = cache.quarantine(dl / f.name, "sha256 differs from apt's Sources index")
            raise StageError(f"{pkg.name}: {f.name} does not match apt's Sources index "
                             f"(moved aside to {bad.name})", stage="image")
    return found


def _offered(pkg: Package, apt: PrivateApt) -> tuple[list[SourceRecord], list[str], str]:
    """(records the range admits newest first, every version listed, why the index may be stale)."""
    update = apt.update()
    stale = "" if update.ok else f"; apt-get update failed: {_last_error(update.stderr)}"
    records = apt.showsrc(pkg.source)
    by_version = {r.version: r for r in records}
    admitted = [by_version[v] for v in _by_version(list(by_version)) if pkg.upstream.admits_debian(v)]
    return admitted, _by_version(list(by_version)), stale


def resolve(pkg: Package, dl: Path, apt: PrivateApt, *, refresh: bool = False) -> DebianSource:
    """The source of ``pkg`` to build: kept from an earlier fetch, else the newest apt offers.

    Without ``refresh`` a complete version already in ``dl`` that the recipe
    admits is used without asking apt, so a warm build needs no network.
    When apt cannot deliver (no network, the revision left the archive) a
    version already in ``dl`` is used instead, saying so.
    """
    local = newest_local(pkg, dl)
    if local is not None and not refresh:
        return local
    wanted = f"{pkg.source} with upstream version {pkg.upstream}"
    if not PrivateApt.available():
        if local is not None:
            return local
        raise StageError(f"{pkg.name}: no Debian source {wanted} in {dl}, and apt-get is not "
                         "installed to fetch one", stage="image")
    admitted, listed, stale = _offered(pkg, apt)
    if not admitted:
        if local is not None:
            _note(f"{pkg.name}: apt offers no {wanted}; using {local.version} from {dl}")
            return local
        raise StageError(f"{pkg.name}: apt offers no Debian source {wanted} (offered: "
                         f"{', '.join(listed) or 'none'}{stale})", stage="image")
    best = admitted[0]
    if local is not None and debversion.compare(local.version, best.version) >= 0:
        return local
    try:
        return download(pkg, best, dl, apt)
    except StageError as exc:
        if local is None:
            raise
        _note(f"{exc}; using {local.version} from {dl}")
        return local


def fetch_sources(recipe: Recipe, *, refresh: bool = False) -> dict[str, DebianSource]:
    """The Debian source of every package of ``recipe``, complete and checked (see :func:`resolve`)."""
    dl = debian_downloads()
    apt = PrivateApt(dl / ".apt")
    with cache.lock("debian-sources", "the Debian sources download"):
        return {name: resolve(pkg, dl, apt, refresh=refresh) for name, pkg in recipe.packages.items()}


def local_sources(recipe: Recipe) -> Mapping[str, DebianSource | None]:
    """What :func:`fetch_sources` would use without a network: the newest complete version in downloads/."""
    dl = debian_downloads()
    with cache.lock("debian-sources", "the Debian sources download"):
        return {name: newest_local(pkg, dl) for name, pkg in recipe.packages.items()}
