"""Underlined spans cut into the text's runs, the same for Tk's Text and Windows' RichEdit."""

from __future__ import annotations

from collections.abc import Sequence


def segments(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
    """`text` cut at the span edges: (piece, underlined). Spans outside the text are clipped, overlaps merged,
    so a caller's stale or sloppy spans never fail the window."""
    marks = bytearray(len(text))
    for start, end in spans:
        start, end = max(0, start), min(len(text), end)
        if start < end:
            marks[start:end] = b"\x01" * (end - start)
    pieces: list[tuple[str, bool]] = []
    at = 0
    while at < len(text):  # linear: a 16 MiB answer is cut in one pass
        marked = marks[at]
        upto = marks.find(b"\x00" if marked else b"\x01", at)
        upto = len(text) if upto < 0 else upto
        pieces.append((text[at:upto], bool(marked)))
        at = upto
    return pieces


__all__ = ["segments"]
