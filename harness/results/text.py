"""Long text cut to a limit, keeping its head and its (more telling) tail: the one truncation helper."""

from __future__ import annotations

MAX_EXCERPT = 16_000
"""Longest log excerpt (console, kernel log, traceback) kept per test, in characters."""


def truncate(text: str, limit: int = MAX_EXCERPT) -> str:
    """``text`` if short enough, else its head and tail (at line boundaries) around a marker.

    The tail gets three quarters of the room: the lines before a failure tell
    most.  The result is at most ``limit`` characters plus the marker line.
    """
    if len(text) <= limit:
        return text
    head_room = limit // 4
    tail_room = limit - head_room
    head = text[:head_room]
    tail = text[-tail_room:] if tail_room else ""
    if "\n" in head:
        head = head[: head.rindex("\n") + 1]
    if "\n" in tail:
        tail = tail[tail.index("\n") + 1:]
    cut = len(text) - len(head) - len(tail)
    return f"{head}[... {cut} characters cut ...]\n{tail}"
