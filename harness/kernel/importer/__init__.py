"""Recover a clean unified diff from a patch damaged by mail and web archives.

A patch copied out of a quoted reply in a web archive arrives with quote
markers, code fences, blank-line noise, lost leading whitespace, hunk headers
glued into text and hunk counts that no longer match.  :func:`import_patch`
runs the pipeline:

1. to 3. :mod:`harness.kernel.importer.text` unquotes and cleans the text,
   separates the message from the diff, and cuts the diff into file sections
   and hunks;
4. :mod:`harness.kernel.importer.tree`, given a pristine tree, replaces every
   context and removed line by the exact line of the real file and decides
   which bare lines are real empty lines (without a tree they are guessed
   from the stated counts);
5. :func:`render_section` recounts every hunk and prints a clean ``a/``
   ``b/`` diff.

Added lines keep the text as posted: their whitespace cannot be known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.kernel.importer.text import (
    Section,
    clean,
    guess_bare_lines,
    parse_preamble,
    parse_sections,
    split,
)
from harness.kernel.importer.tree import restore, target_path


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


def import_patch(
    text: str, against: Path | None = None, *, name: str = "patch text"
) -> ImportedPatch:
    """Recover the patch in ``text``; ``against`` is a pristine tree to restore context from."""
    warnings: list[str] = []
    lines = clean(text, name, warnings)
    preamble, body = split(lines, name)
    author, subject, message = parse_preamble(preamble)
    sections = parse_sections(body, name, lambda old, new: target_path(old, new, against),
                              warnings)
    if against is None:
        warnings.append(
            "no source tree given: context whitespace not restored and bare lines guessed "
            "from the stated counts (best effort)"
        )
    for section in sections:
        if against is not None and section.old is not None:
            restore(section, against, warnings)
        elif against is None:
            for index, (_, hunk) in enumerate(section.hunks, 1):
                guess_bare_lines(section.path, index, hunk, warnings)
    diff = "".join(render_section(section, warnings) for section in sections)
    return ImportedPatch(
        author=author,
        subject=subject,
        message=message,
        diff=diff,
        files=tuple(section.path for section in sections),
        warnings=tuple(warnings),
    )


def render_section(section: Section, warnings: list[str]) -> str:
    """One file section as a clean diff, every hunk recounted (a changed count is a warning)."""
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
