"""The patch under review: read from a mail, mbox, web page or .patch, and made the top of a series.

:func:`read_submission` finds the patch (or patches, from an mbox) in FILE;
:func:`make_series` writes the temporary series a review builds, in a
``HARNESS_PATCHES``-style directory: the base series underneath, then the
posted patch, the repair patches (``--repair``) and the patches of the series
that goes on top (``--with``).  :func:`apply_in_scratch` applies it all to a
hard-linked scratch tree, one patch at a time, so a patch that does not apply
is named (and the final tree can be read to quote source lines).
"""

from __future__ import annotations

import email
import email.policy
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from harness import cache
from harness.errors import InputError, StageError
from harness.kernel import build, importer, patches
from harness.kernel.importer import ImportedPatch
from harness.review.diff import PatchDiff, parse_diff

Origin = Literal["posted", "repair", "with"]
_MBOX_FROM = re.compile(r"^From \S+ .*\d{4}\s*$")
_HEADER = re.compile(r"^[A-Za-z][A-Za-z0-9-]*: ")
_PART = re.compile(r"\[[^\]]*?(\d+)/(\d+)[^\]]*\]")


@dataclass(frozen=True)
class Submission:
    """What FILE holds: one or more patches (an mbox may hold a series), in order."""

    path: Path
    patches: tuple[ImportedPatch, ...]

    @property
    def subject(self) -> str:
        return self.patches[0].subject or self.path.name


def _messages(text: str) -> list[str]:
    """The texts to look for a patch in: each message of an mbox, the body of a mail (MIME
    decoded), or the text itself (a web page, a plain patch)."""
    lines = text.splitlines(keepends=True)
    if lines and _MBOX_FROM.match(lines[0]):
        chunks: list[list[str]] = []
        for line in lines:
            if _MBOX_FROM.match(line):
                chunks.append([])
            else:
                chunks[-1].append(line[1:] if line.startswith(">From ") else line)
        return [_mail_text("".join(c)) for c in chunks]
    if lines and _HEADER.match(lines[0]) and not lines[0].startswith(("diff ", "--- ")):
        return [_mail_text(text)]
    return [text]


def _mail_text(raw: str) -> str:
    """A mail's From/Subject and its text parts, decoded (quoted-printable, base64, charsets)."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not msg.get("Subject") and not msg.is_multipart():
        return raw
    parts: list[str] = []
    for part in msg.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            try:
                parts.append(str(part.get_content()))
            except (LookupError, ValueError):
                parts.append(str(part.get_payload()))
    head = "".join(f"{key}: {msg[key]}\n" for key in ("From", "Subject") if msg.get(key))
    return head + "\n" + "\n".join(parts)


def read_submission(path: Path, against: Path | None) -> Submission:
    """The patches in ``path``; InputError (naming the file) when there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); expected a mail, mbox, web page "
                         "or patch") from None
    found: list[ImportedPatch] = []
    for n, message in enumerate(_messages(text), 1):
        try:
            found.append(importer.import_patch(message, against=against, name=f"{path} (message {n})"))
        except InputError:
            continue  # a cover letter, a reply without a diff
    if not found:
        raise InputError(f"{path}: no patch found (expected a unified diff with '--- ' and '+++ ' "
                         "file headers in a mail, mbox, web page or .patch file)")
    numbered = [_PART.search(p.subject or "") for p in found]
    if all(numbered) and len(found) > 1:
        found = [p for _, p in sorted(zip([int(m.group(1)) for m in numbered if m], found, strict=True),
                                      key=lambda pair: pair[0])]
    return Submission(path, tuple(found))


@dataclass(frozen=True)
class Layer:
    """One patch file of the review series and where it comes from."""

    origin: Origin
    label: str  # "the posted patch", "rcfs/0002-....patch"
    filename: str
    text: str

    @property
    def diff(self) -> PatchDiff:
        return parse_diff(self.text, self.label)


@dataclass(frozen=True)
class ReviewSeries:
    root: Path  # a HARNESS_PATCHES-style directory holding the series
    name: str
    base: str
    layers: tuple[Layer, ...]
    chain_extra: tuple[str, ...]  # series whose patches it carries (config templates see them)

    def of(self, origin: Origin) -> list[Layer]:
        return [layer for layer in self.layers if layer.origin == origin]


def _same_diff(a: str, b: str) -> bool:
    def files(text: str) -> list[tuple[str, tuple[str, ...]]]:
        return [(f.path, tuple(f"{ln.kind}{ln.text}".rstrip() for h in f.hunks for ln in h.lines))
                for f in parse_diff(text).files]
    return files(a) == files(b)


def layers_for(submission: Submission, repair: str | None, with_series: str | None) -> list[Layer]:
    """The posted patches, then the repair series' own patches (without any that is the posted
    patch itself), then the own patches of ``with_series``."""
    out: list[Layer] = []
    for n, posted in enumerate(submission.patches, 1):
        text = posted.render()
        out.append(Layer("posted", "the posted patch" + (f" {n}" if len(submission.patches) > 1 else ""),
                         f"{len(out) + 1:04d}-posted.patch", text))
    posted_texts = [layer.text for layer in out]
    for origin, name in (("repair", repair), ("with", with_series)):
        if not name:
            continue
        for p in patches.load_series(name).own_patches():
            text = p.path.read_text(errors="replace")
            if origin == "repair" and any(_same_diff(text, t) for t in posted_texts):
                continue  # the repair series starts with the posted patch itself
            out.append(Layer(origin, f"{name}/{p.name}",  # type: ignore[arg-type]
                             f"{len(out) + 1:04d}-{origin}-{name}-{p.name}", text))
    return out


def make_series(root: Path, base: str, layers: list[Layer], chain_extra: tuple[str, ...]) -> ReviewSeries:
    """Write the series (named after its contents, so a review of the same patch reuses its builds)."""
    name = "review-" + cache.digest(base, *(layer.text for layer in layers), length=10)
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        (directory / layer.filename).write_text(layer.text)
    (directory / "series").write_text("".join(f"{layer.filename}\n" for layer in layers))
    (directory / "base").write_text(f"{base}\n")
    return ReviewSeries(root, name, base, tuple(layers), chain_extra)


@dataclass(frozen=True)
class NotApplied:
    """A patch of the review series that does not apply where it goes; ``why`` from patch(1)."""

    layer: Layer
    why: str


@contextmanager
def scratch_tree(source_tree: Path, base: str) -> Iterator[Path]:
    """A hard-linked copy of the pristine tree with the base series applied; removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="scratch-", dir=cache.subdir("review")))
    try:
        tree = work / "tree"
        tree.mkdir()
        build.link_tree(source_tree, tree)
        patches.apply_series(patches.load_series(base), tree)
        yield tree
    finally:
        cache.remove_tree(work)


def apply_layers(series: ReviewSeries, tree: Path) -> NotApplied | None:
    """Apply the layers in order to ``tree`` (the base already applied); the first that fails."""
    for layer in series.layers:
        path = series.root / series.name / layer.filename
        patch = patches.Patch(series.name, layer.filename, path, cache.file_sha256(path))
        try:
            patches.apply_patch(patch, tree)
        except StageError as exc:
            return NotApplied(layer, str(exc))
    return None
