"""apt run with a private configuration (a deb-src twin of the host's Debian sources), no root needed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import proc

# Used when the host has no Debian apt source to twin.
FALLBACK_DEB_SRC = """\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

_LIST_LINE = re.compile(r"^\s*deb\s+(\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$")
_SHA256_LINE = re.compile(r"^([0-9a-f]{64})\s+(\d+)\s+(\S+)$")


def deb822_stanzas(text: str) -> Iterator[list[tuple[str, str]]]:
    """Yield deb822 stanzas as ordered (field, raw value) lists (continuations kept)."""
    stanza: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza = []
        elif line.startswith("#"):
            continue
        elif line[0] in " \t" and stanza:
            key, value = stanza[-1]
            stanza[-1] = (key, value + "\n" + line)
        elif ":" in line:
            key, _, value = line.partition(":")
            stanza.append((key.strip(), value.strip()))
    if stanza:
        yield stanza


def _twin_deb822(text: str) -> list[str]:
    out = []
    for stanza in deb822_stanzas(text):
        fields = {k.lower(): v for k, v in stanza}
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split() or "debian" not in fields.get("uris", ""):
            continue
        lines = ["Types: deb-src"]
        lines += [f"{key}: {value}" for key, value in stanza
                  if key.lower() not in ("types", "enabled", "architectures")]
        out.append("\n".join(lines))
    return out


def _twin_one_line(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        m = _LIST_LINE.match(line)
        if not m or "debian" not in m.group(3):
            continue
        opts = dict(o.split("=", 1) for o in (m.group(2) or "").split() if "=" in o)
        lines = ["Types: deb-src", f"URIs: {m.group(3)}", f"Suites: {m.group(4)}"]
        if m.group(5).strip():
            lines.append(f"Components: {m.group(5).strip()}")
        if "signed-by" in opts:
            lines.append(f"Signed-By: {opts['signed-by']}")
        out.append("\n".join(lines))
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def deb_src_twin(etc_apt: Path = Path("/etc/apt")) -> str:
    """deb822 ``deb-src`` stanzas mirroring the host's Debian ``deb`` sources.

    Both deb822 ``.sources`` files and one-line ``.list`` entries are read;
    only sources whose URI mentions "debian" are twinned (third-party
    repositories have no source packages we want).  Without any, the Debian
    12 archive is used.
    """
    d = etc_apt / "sources.list.d"
    out: list[str] = []
    for f in sorted(d.glob("*.sources")) if d.is_dir() else []:
        out += _twin_deb822(_read(f) or "")
    for f in [etc_apt / "sources.list"] + (sorted(d.glob("*.list")) if d.is_dir() else []):
        out += _twin_one_line(_read(f) or "")
    if not out:
        return FALLBACK_DEB_SRC
    return "\n\n".join(out) + "\n"


@dataclass(frozen=True)
class SourceRecord:
    """One version of a source package as the (signed) Sources index lists it."""

    package: str
    version: str
    files: tuple[tuple[str, str], ...]  # (file name, sha256), the .dsc included


def parse_sources(text: str, package: str) -> list[SourceRecord]:
    """The records of ``package`` in Sources-index text (``apt-cache showsrc`` output)."""
    records = []
    for stanza in deb822_stanzas(text):
        fields = dict(stanza)
        if fields.get("Package") != package or "Version" not in fields:
            continue
        files = []
        for line in fields.get("Checksums-Sha256", "").splitlines():
            m = _SHA256_LINE.match(line.strip())
            if m:
                files.append((m.group(3), m.group(1)))
        records.append(SourceRecord(package, fields["Version"], tuple(files)))
    return records


class PrivateApt:
    """apt-get/apt-cache with their own sources, lists and cache below ``root``: no root, no /etc/apt change.

    What apt guarantees here (seen with apt 2.6): ``update`` refuses a
    repository whose Release file is unsigned or not signed by the keyring
    the source names ("is not signed"), so the Sources index is authentic;
    ``source --download-only NAME=VERSION`` checks every file it fetches, the
    .dsc included, against the sha256 the index lists ("Hash Sum mismatch",
    non-zero exit), and re-fetches a file already in its directory whose
    checksum differs, keeping only one that matches.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._update: proc.Completed | None = None

    def options(self) -> list[str]:
        return [
            "-q",
            "-o", f"Dir::Etc::SourceList={self.root / 'empty.list'}",
            "-o", f"Dir::Etc::SourceParts={self.root / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
        ]

    def prepare(self) -> None:
        """Write the private configuration (the deb-src twin of /etc/apt)."""
        for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "empty.list").write_text("")
        (self.root / "sources.list.d" / "harness-deb-src.sources").write_text(deb_src_twin())

    @staticmethod
    def available() -> bool:
        return proc.which("apt-get") is not None and proc.which("apt-cache") is not None

    def update(self) -> proc.Completed:
        """``apt-get update`` of the private lists (once per instance; failure is returned, not raised)."""
        if self._update is None:
            self.prepare()
            self._update = proc.run(["apt-get", *self.options(), "update"], check=False, timeout=900,
                                    what="apt-get update (deb-src)")
        return self._update

    def showsrc(self, package: str) -> list[SourceRecord]:
        """Every version of source ``package`` the index lists (none when there is no index)."""
        result = proc.run(["apt-cache", *self.options(), "showsrc", "--only-source", package],
                          check=False, timeout=300, what="apt-cache showsrc")
        return parse_sources(result.stdout, package)

    def download(self, package: str, version: str, dest: Path) -> proc.Completed:
        """``apt-get source --download-only PACKAGE=VERSION`` into ``dest`` (the .dsc and its files)."""
        return proc.run(["apt-get", *self.options(), "source", "--download-only", f"{package}={version}"],
                        cwd=dest, check=False, timeout=1800, what="apt-get source")
