"""Text recovery: unquote a damaged patch, separate message and diff, cut the diff into hunks.

Steps 1 to 3 of :func:`harness.kernel.importer.import_patch`, on text alone:

1. :func:`clean`: normalise line endings, strip quote markers down to the
   depth of the diff, drop code fences and lines from outside the quote;
2. :func:`split` and :func:`parse_preamble`: separate the message (author,
   subject, text) from the diff;
3. :func:`parse_sections`: cut the diff into file sections and hunks,
   repairing glued hunk headers and dropping trailing junk.

Without a source tree, :func:`guess_bare_lines` decides from the stated hunk
counts which bare lines are empty context lines and which are noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import InputError

_HUNK_RE = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_META_RE = re.compile(
    r"(diff |Index: |={10,}$|index [0-9a-f]+\.\.[0-9a-f]+|(new|deleted) file mode |"
    r"old mode |new mode |similarity index |rename (from|to) |copy (from|to) )"
)
_TIMESTAMP_RE = re.compile(
    r"\s+(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\s*[+-]\d{4})?"
    r"|\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\s*$"
)
_MAIL_HEADER_RE = re.compile(
    r"(From|Subject|Date|To|Cc|Message-Id|In-Reply-To|References):|From [0-9a-f]{40} ", re.I
)
_REPLY_PREFIX_RE = re.compile(r"^((re|fwd?|aw)\s*:\s*)+", re.I)
_ATTRIBUTION_RES = (
    re.compile(r"^Quoting (?P<name>[^<(]+?)\s*[(<](?P<email>[^\s()<>]+@[^\s()<>]+)[)>]\s*:$"),
    re.compile(
        r"^(On .*,\s*)?(?P<name>[^,<(]+?)\s*[(<](?P<email>[^\s()<>]+@[^\s()<>]+)[)>] wrote:$"
    ),
)
_SIGNED_OFF_RE = re.compile(r"^Signed-off-by\s*:\s*(.+)$", re.I)

#: (old name, new name) -> the tree-relative path a section changes
PathChooser = Callable[[str | None, str | None], str]


@dataclass
class Src:
    """One input line after unquoting: 1-based input line number, text, inside the quote."""

    lineno: int
    text: str
    inside: bool


@dataclass
class Line:
    """One hunk body line; kind "?" is a bare line: an empty context line or noise."""

    kind: str
    text: str
    lineno: int
    lost_marker: bool = False


@dataclass
class Hunk:
    old_start: int
    old_count: int
    new_count: int
    section: str
    lineno: int
    lines: list[Line] = field(default_factory=list)

    def stated(self, new_start: int) -> str:
        return f"@@ -{self.old_start},{self.old_count} +{new_start},{self.new_count} @@"

    def counts(self) -> tuple[int, int]:
        old = sum(1 for ln in self.lines if ln.kind in " -?")
        new = sum(1 for ln in self.lines if ln.kind in " +?")
        return old, new


@dataclass
class Section:
    old: str | None
    new: str | None
    path: str
    hunks: list[tuple[int, Hunk]] = field(default_factory=list)  # (stated new start, hunk)


# 1. unquote and clean ---------------------------------------------------------


def _unquote(line: str, limit: int | None = None) -> tuple[int, str]:
    """Strip up to ``limit`` quote markers (``> `` or ``>``); return (markers, rest)."""
    depth = 0
    while line.startswith(">") and (limit is None or depth < limit):
        line = line[2:] if line.startswith("> ") else line[1:]
        depth += 1
    return depth, line


def clean(text: str, name: str, warnings: list[str]) -> list[Src]:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        warnings.append("converted CRLF line endings")
    raw = text.split("\n")
    depth = _diff_depth(raw, name)
    result: list[Src] = []
    fences = outside = 0
    for lineno, line in enumerate(raw, 1):
        markers, rest = _unquote(line, depth)
        if rest.lstrip().startswith("```"):
            fences += 1
            continue
        result.append(Src(lineno, rest, markers == depth))
        outside += markers < depth
    if depth:
        warnings.append(f"removed {depth} level(s) of quote markers, ignored {outside} other lines")
    if fences:
        warnings.append(f"dropped {fences} code-fence lines")
    return result


def _diff_depth(raw: list[str], name: str) -> int:
    """Quote depth of the first ``--- ``/``+++ `` pair (noise lines may sit between them)."""
    minus_depths: set[int] = set()
    for line in raw:
        depth, rest = _unquote(line)
        if rest.startswith("--- "):
            minus_depths.add(depth)
        elif rest.startswith("+++ ") and depth in minus_depths:
            return depth
    raise InputError(f"{name}: no unified diff found (expected '--- ' and '+++ ' file headers)")


# 2. message and diff ----------------------------------------------------------


def _file_header_at(body: list[Src], i: int) -> int | None:
    """If ``body[i:]`` is (metadata)* ``--- `` ``+++ ``, return the index of the ``--- `` line."""
    while i + 1 < len(body) and _META_RE.match(body[i].text):
        i += 1
    if (
        i + 1 < len(body)
        and body[i].text.startswith("--- ")
        and body[i + 1].text.startswith("+++ ")
    ):
        return i
    return None


def split(lines: list[Src], name: str) -> tuple[list[Src], list[Src]]:
    """Return (preamble, diff body); the body holds only lines inside the quote."""
    inside = [src for src in lines if src.inside]
    for i in range(len(inside)):
        if _file_header_at(inside, i) is not None:
            start = inside[i].lineno
            return [src for src in lines if src.lineno < start], inside[i:]
    raise InputError(f"{name}: no unified diff found (expected '--- ' and '+++ ' file headers)")


def parse_preamble(preamble: list[Src]) -> tuple[str | None, str | None, str]:
    """Author, subject (reply prefixes stripped) and message text (up to ``---``)."""
    author = subject = None
    subject_inside = False  # a Subject: inside the quote beats the reply's own
    for src in preamble:
        text = _unquote(src.text)[1].strip()
        if text.lower().startswith("subject:") and (subject is None or src.inside > subject_inside):
            subject = _REPLY_PREFIX_RE.sub("", text[8:].strip()) or None
            subject_inside = src.inside
        if src.inside and text.lower().startswith("from:") and text[5:].strip():
            author = text[5:].strip()
        for regex in _ATTRIBUTION_RES:
            match = regex.match(text)
            if match and author is None and not src.inside:
                author = f"{match['name']} <{match['email']}>"
    message: list[str] = []
    in_headers = True
    for src in preamble:
        text = src.text.rstrip()
        if not src.inside:
            if text:
                message.append("")  # someone else's words split the quoted message
            continue
        if in_headers and _MAIL_HEADER_RE.match(text):
            continue
        in_headers = in_headers and not text
        if text == "---":
            break
        message.append(text)
    paragraphs = "\n".join(message).split("\n\n")
    text = "\n\n".join(p.strip("\n") for p in paragraphs if p.strip())
    if author is None:
        signed = [m[1] for m in map(_SIGNED_OFF_RE.match, text.splitlines()) if m]
        author = signed[0].strip() if signed else None
    return author, subject, text + "\n" if text else ""


# 3. file sections and hunks ---------------------------------------------------


def _header_name(value: str) -> str | None:
    value = _TIMESTAMP_RE.sub("", value.split("\t")[0]).strip()
    return None if value == "/dev/null" else value


def classify(text: str, lineno: int) -> Line:
    if not text:
        return Line("?", "", lineno)
    if text[0] in " +-\\":
        return Line(text[0], text[1:], lineno)
    return Line(" ", text, lineno, lost_marker=True)


def parse_sections(
    body: list[Src], name: str, place: PathChooser, warnings: list[str]
) -> list[Section]:
    """File sections with their hunks; ``place(old, new)`` names the file a section changes."""
    sections: list[Section] = []
    hunk: Hunk | None = None
    i = 0
    while i < len(body):
        src = body[i]
        header = _file_header_at(body, i)
        if header is not None and (
            hunk is None
            or _complete(hunk)
            or (header + 2 < len(body) and _HUNK_RE.search(body[header + 2].text))
        ):
            old = _header_name(body[header].text[4:])
            new = _header_name(body[header + 1].text[4:])
            if old is None and new is None:
                raise InputError(
                    f"{name}: line {body[header].lineno}: both file names are /dev/null"
                )
            sections.append(Section(old, new, place(old, new)))
            hunk = None
            i = header + 2
            continue
        if src.text.rstrip() == "--" and (hunk is None or _complete(hunk)):
            rest = sum(1 for later in body[i:] if later.text.strip())
            warnings.append(f"ignored {rest} lines after the end of the diff at line {src.lineno}")
            break
        match = _HUNK_RE.search(src.text)
        if match and sections:
            prefix = src.text[: match.start()]
            where = f"{sections[-1].path}: hunk header"
            if prefix.strip() and hunk is not None:
                hunk.lines.append(classify(prefix, src.lineno))
                warnings.append(f"{where} glued to text at line {src.lineno}")
            elif prefix:
                warnings.append(f"{where} split from text at line {src.lineno}")
            old_start, old_count, new_start, new_count, section = match.groups()
            hunk = Hunk(
                int(old_start),
                1 if old_count is None else int(old_count),
                1 if new_count is None else int(new_count),
                section.strip(),
                src.lineno,
            )
            sections[-1].hunks.append((int(new_start), hunk))
        elif hunk is not None:
            hunk.lines.append(classify(src.text, src.lineno))
        i += 1
    for section in sections:
        if not section.hunks:
            raise InputError(f"{name}: {section.path}: file header without any hunk")
        for index, (_, each) in enumerate(section.hunks, 1):
            _trim(section, index, each, warnings)
    return sections


def _complete(hunk: Hunk) -> bool:
    old, new = hunk.counts()
    return old >= hunk.old_count and new >= hunk.new_count


def _trim(section: Section, index: int, hunk: Hunk, warnings: list[str]) -> None:
    """Drop trailing junk after a hunk, and bare noise inside new or deleted files."""
    where = f"{section.path}: hunk {index}"
    lines = hunk.lines
    whole_file = section.old is None or section.new is None
    if whole_file:  # only added (or only removed) lines: anything else ends the hunk
        allowed = ("+" if section.old is None else "-", "\\", "?")
        end = next((n for n, line in enumerate(lines) if line.kind not in allowed), len(lines))
    else:  # keep up to the last unambiguous line, then weak lines the stated count asks for
        strong = [
            n
            for n, line in enumerate(lines)
            if line.kind in "+-\\" or (line.kind == " " and not line.lost_marker)
        ]
        end = strong[-1] + 1 if strong else 0
        while end < len(lines) and sum(ln.kind in " -?" for ln in lines[:end]) < hunk.old_count:
            end += 1
    dropped = [line for line in lines[end:] if line.text.strip()]
    if dropped:
        warnings.append(
            f"{where}: ignored {len(dropped)} trailing lines at line {dropped[0].lineno}"
        )
    hunk.lines = lines[:end]
    if whole_file:
        noise = sum(line.kind == "?" for line in hunk.lines)
        if noise:
            warnings.append(f"{where}: dropped {noise} bare noise lines")
        hunk.lines = [line for line in hunk.lines if line.kind != "?"]
    lost = sum(line.lost_marker for line in hunk.lines)
    if lost:
        warnings.append(f"{where}: {lost} context lines had lost their leading space")


def guess_bare_lines(path: str, index: int, hunk: Hunk, warnings: list[str]) -> None:
    """Without a tree, drop bare lines as noise while the old side exceeds the stated count.

    Repeated bare lines go first, then bare lines at either end of the hunk, then the rest.
    """
    lines = hunk.lines
    excess = hunk.counts()[0] - hunk.old_count

    def rank(n: int) -> int:
        if n and lines[n - 1].kind == "?":
            return 0
        return 1 if n in (0, len(lines) - 1) else 2

    bare = sorted((n for n, line in enumerate(lines) if line.kind == "?"), key=rank)
    drop = set(bare[: max(excess, 0)]) if 0 < excess <= len(bare) else set()
    if drop:
        warnings.append(f"{path}: hunk {index}: dropped {len(drop)} bare lines as noise")
    hunk.lines = [line for n, line in enumerate(lines) if n not in drop]
    for line in hunk.lines:
        if line.kind == "?":
            line.kind = " "
