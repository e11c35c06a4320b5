"""Recover a clean unified diff from a patch damaged by mail and web archives.

A patch copied out of a quoted reply in a web archive arrives with quote
markers, code fences, blank-line noise, lost leading whitespace, hunk headers
glued into text and hunk counts that no longer match.  The pipeline is:

1. ``_clean``: normalise line endings, strip quote markers down to the depth
   of the diff, drop code fences and lines from outside the quote;
2. ``_split``: separate the message (author, subject, text) from the diff;
3. ``_parse_sections``: cut the diff into file sections and hunks, repairing
   glued hunk headers and dropping trailing junk;
4. ``_restore``: with a pristine tree, replace every context and removed line
   by the exact line of the real file (whitespace-insensitive matching near
   the stated line number) and decide which bare lines are real empty lines;
5. ``_render_diff``: recount every hunk and print a clean ``a/`` ``b/`` diff.

Added lines keep the text as posted: their whitespace cannot be known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

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
_SEARCH_WINDOW = 300
_NO_NEWLINE = "\\ No newline at end of file"


@dataclass(frozen=True)
class ImportedPatch:
    """A patch recovered from damaged text, ready to be written as a patch file."""

    author: str | None
    subject: str | None
    message: str
    diff: str
    files: tuple[str, ...]
    warnings: tuple[str, ...]

    def render(self) -> str:
        """Full patch file: From:/Subject: header, blank line, message, ``---``, diff."""
        head = ""
        if self.author:
            head += f"From: {self.author}\n"
        if self.subject:
            head += f"Subject: {self.subject}\n"
        return f"{head}\n{self.message}---\n{self.diff}"


@dataclass
class _Src:
    """One input line after unquoting: 1-based input line number, text, inside the quote."""

    lineno: int
    text: str
    inside: bool


@dataclass
class _Line:
    """One hunk body line; kind "?" is a bare line: an empty context line or noise."""

    kind: str
    text: str
    lineno: int
    lost_marker: bool = False


@dataclass
class _Hunk:
    old_start: int
    old_count: int
    new_count: int
    section: str
    lineno: int
    lines: list[_Line] = field(default_factory=list)

    def stated(self, new_start: int) -> str:
        return f"@@ -{self.old_start},{self.old_count} +{new_start},{self.new_count} @@"

    def counts(self) -> tuple[int, int]:
        old = sum(1 for ln in self.lines if ln.kind in " -?")
        new = sum(1 for ln in self.lines if ln.kind in " +?")
        return old, new


@dataclass
class _Section:
    old: str | None
    new: str | None
    path: str
    hunks: list[tuple[int, _Hunk]] = field(default_factory=list)  # (stated new start, hunk)


def import_patch(
    text: str, against: Path | None = None, *, name: str = "patch text"
) -> ImportedPatch:
    """Recover the patch in ``text``; ``against`` is a pristine tree to restore context from."""
    warnings: list[str] = []
    lines = _clean(text, name, warnings)
    preamble, body = _split(lines, name)
    author, subject, message = _parse_preamble(preamble)
    sections = _parse_sections(body, name, against, warnings)
    if against is None:
        warnings.append(
            "no source tree given: context whitespace not restored and bare lines guessed "
            "from the stated counts (best effort)"
        )
    for section in sections:
        if against is not None and section.old is not None:
            _restore(section, against, warnings)
        elif against is None:
            for index, (_, hunk) in enumerate(section.hunks, 1):
                _guess_bare_lines(section.path, index, hunk, warnings)
    diff = "".join(_render_section(section, warnings) for section in sections)
    return ImportedPatch(
        author=author,
        subject=subject,
        message=message,
        diff=diff,
        files=tuple(section.path for section in sections),
        warnings=tuple(warnings),
    )


# 1. unquote and clean ---------------------------------------------------------


def _unquote(line: str, limit: int | None = None) -> tuple[int, str]:
    """Strip up to ``limit`` quote markers (``> `` or ``>``); return (markers, rest)."""
    depth = 0
    while line.startswith(">") and (limit is None or depth < limit):
        line = line[2:] if line.startswith("> ") else line[1:]
        depth += 1
    return depth, line


def _clean(text: str, name: str, warnings: list[str]) -> list[_Src]:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        warnings.append("converted CRLF line endings")
    raw = text.split("\n")
    depth = _diff_depth(raw, name)
    result: list[_Src] = []
    fences = outside = 0
    for lineno, line in enumerate(raw, 1):
        markers, rest = _unquote(line, depth)
        if rest.lstrip().startswith("```"):
            fences += 1
            continue
        result.append(_Src(lineno, rest, markers == depth))
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


def _file_header_at(body: list[_Src], i: int) -> int | None:
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


def _split(lines: list[_Src], name: str) -> tuple[list[_Src], list[_Src]]:
    """Return (preamble, diff body); the body holds only lines inside the quote."""
    inside = [src for src in lines if src.inside]
    for i in range(len(inside)):
        if _file_header_at(inside, i) is not None:
            start = inside[i].lineno
            return [src for src in lines if src.lineno < start], inside[i:]
    raise InputError(f"{name}: no unified diff found (expected '--- ' and '+++ ' file headers)")


def _parse_preamble(preamble: list[_Src]) -> tuple[str | None, str | None, str]:
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


def _target_path(old: str | None, new: str | None, against: Path | None) -> str:
    name = new if new is not None else old
    assert name is not None
    parts = name.split("/")
    candidates = ["/".join(parts[1:]), name] if len(parts) > 1 else [name]
    if against is not None:  # an existing file first, then an existing directory
        for candidate in candidates:
            if (against / candidate).is_file():
                return candidate
        for candidate in candidates:
            if "/" in candidate and (against / candidate).parent.is_dir():
                return candidate
    return candidates[0]


def _classify(text: str, lineno: int) -> _Line:
    if not text:
        return _Line("?", "", lineno)
    if text[0] in " +-\\":
        return _Line(text[0], text[1:], lineno)
    return _Line(" ", text, lineno, lost_marker=True)


def _parse_sections(
    body: list[_Src], name: str, against: Path | None, warnings: list[str]
) -> list[_Section]:
    sections: list[_Section] = []
    hunk: _Hunk | None = None
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
            sections.append(_Section(old, new, _target_path(old, new, against)))
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
                hunk.lines.append(_classify(prefix, src.lineno))
                warnings.append(f"{where} glued to text at line {src.lineno}")
            elif prefix:
                warnings.append(f"{where} split from text at line {src.lineno}")
            old_start, old_count, new_start, new_count, section = match.groups()
            hunk = _Hunk(
                int(old_start),
                1 if old_count is None else int(old_count),
                1 if new_count is None else int(new_count),
                section.strip(),
                src.lineno,
            )
            sections[-1].hunks.append((int(new_start), hunk))
        elif hunk is not None:
            hunk.lines.append(_classify(src.text, src.lineno))
        i += 1
    for section in sections:
        if not section.hunks:
            raise InputError(f"{name}: {section.path}: file header without any hunk")
        for index, (_, each) in enumerate(section.hunks, 1):
            _trim(section, index, each, warnings)
    return sections


def _complete(hunk: _Hunk) -> bool:
    old, new = hunk.counts()
    return old >= hunk.old_count and new >= hunk.new_count


def _trim(section: _Section, index: int, hunk: _Hunk, warnings: list[str]) -> None:
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


def _guess_bare_lines(path: str, index: int, hunk: _Hunk, warnings: list[str]) -> None:
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


# 4. restore from the tree -----------------------------------------------------


def _norm(text: str) -> str:
    return "".join(text.split())


def _read_lines(path: Path) -> tuple[list[str], bool]:
    """Lines of a file without their newline (exact bytes kept), and whether it ends in one."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        content = handle.read()
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
        return lines, True
    return lines, False


def _align(items: list[_Line], lines: list[str], pos: int) -> list[int | None] | None:
    """Match the old side of a hunk at ``pos``: file index per item, None for bare noise."""
    steps: list[dict[int, int]] = [{pos: pos}]  # reachable file index -> previous index
    for item in items:
        reach: dict[int, int] = {}
        for j in steps[-1]:
            if j < len(lines) and _norm(lines[j]) == _norm(item.text):
                reach.setdefault(j + 1, j)
        if item.kind == "?":
            for j in steps[-1]:
                reach.setdefault(j, j)
        if not reach:
            return None
        steps.append(reach)
    j = max(steps[-1])
    result: list[int | None] = []
    for reach in reversed(steps[1:]):
        previous = reach[j]
        result.append(previous if previous != j else None)
        j = previous
    return result[::-1]


def _locate(
    items: list[_Line], lines: list[str], stated: int, floor: int
) -> list[int | None] | None:
    """Try ``_align`` at the stated position, then ever further away from it."""
    for offset in range(_SEARCH_WINDOW + 1):
        for pos in (stated + offset, stated - offset) if offset else (stated,):
            if floor <= pos <= len(lines) and (matched := _align(items, lines, pos)) is not None:
                return matched
    return None


def _restore(section: _Section, against: Path, warnings: list[str]) -> None:
    """Give context and removed lines the exact text of the file; drop bare noise lines."""
    path = against / section.path
    if not path.is_file():
        raise InputError(f"{section.path}: not found in {against} (the patch changes it)")
    lines, final_newline = _read_lines(path)
    floor = 0
    for index, (new_start, hunk) in enumerate(section.hunks, 1):
        where = f"{section.path}: hunk {index}"
        items = [line for line in hunk.lines if line.kind in " -?"]
        matched = _locate(items, lines, max(hunk.old_start - 1, 0), floor)
        if matched is None:
            raise InputError(
                f"{where} ({hunk.stated(new_start)}): context not found in {against} "
                f"near line {hunk.old_start}"
            )
        pairs = [(item, j) for item, j in zip(items, matched, strict=True) if j is not None]
        noise = [item for item, j in zip(items, matched, strict=True) if j is None]
        restored = sum(1 for item, j in pairs if item.text != lines[j] or item.kind == "?")
        for item, j in pairs:
            item.text = lines[j]
            item.kind = " " if item.kind == "?" else item.kind
        hunk.lines = [line for line in hunk.lines if all(line is not item for item in noise)]
        if pairs:
            if pairs[0][1] + 1 != hunk.old_start:
                warnings.append(
                    f"{where}: found at line {pairs[0][1] + 1}, stated {hunk.old_start}"
                )
            hunk.old_start = pairs[0][1] + 1
            floor = pairs[-1][1] + 1
            if floor == len(lines) and not final_newline and hunk.lines[-1] is pairs[-1][0]:
                hunk.lines.append(_Line("\\", _NO_NEWLINE[1:], hunk.lines[-1].lineno))
        if noise:
            warnings.append(f"{where}: dropped {len(noise)} bare noise lines")
        if restored:
            warnings.append(f"{where}: restored {restored} lines from the tree")


# 5. recount and render --------------------------------------------------------


def _render_section(section: _Section, warnings: list[str]) -> str:
    old_name = "/dev/null" if section.old is None else f"a/{section.path}"
    new_name = "/dev/null" if section.new is None else f"b/{section.path}"
    out = [f"--- {old_name}\n", f"+++ {new_name}\n"]
    delta = 0
    for index, (stated_new, hunk) in enumerate(section.hunks, 1):
        where = f"{section.path}: hunk {index}"
        old, new = hunk.counts()
        old_start = 0 if section.old is None else hunk.old_start
        first_new = (old_start if old else old_start + 1) + delta
        new_start = 0 if section.new is None else (first_new if new else first_new - 1)
        header = f"@@ -{old_start},{old} +{new_start},{new} @@"
        if (old, new, new_start) != (hunk.old_count, hunk.new_count, stated_new):
            warnings.append(f"{where}: {hunk.stated(stated_new)} recounted as {header}")
        delta += new - old
        out.append(f"{header} {hunk.section}\n" if hunk.section else f"{header}\n")
        out.extend(f"{line.kind}{line.text}\n" for line in hunk.lines)
    return "".join(out)
