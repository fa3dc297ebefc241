"""The tray's words: what a toast says after a capture, and how an error reads there."""

from __future__ import annotations

import re

from dotocr.desktop.notification.text import truncate
from dotocr.errors import DotOCRError

PREVIEW_CHARS = 200

def _preview(text: str) -> str:
    """Lines trimmed, runs of spaces and of blank lines collapsed: a toast has no room for layout."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def summarize_result(text: str, seconds: float) -> tuple[str, str]:
    """(title, body) for the toast after a capture: what was copied and how long it took."""
    if not text.strip():
        return f"Nothing recognised \u00b7 {_seconds(seconds)}", "The clipboard was left unchanged."
    count = len(text)
    noun = "character" if count == 1 else "characters"
    title = f"Copied {count:,} {noun} \u00b7 {_seconds(seconds)}"
    return title, preview(text)


def preview(text: str) -> str:
    """The start of a result as a toast body shows it."""
    return truncate(_preview(text), PREVIEW_CHARS)


def error_sentence(exc: BaseException) -> str:
    """What a toast says about a failure: a DotOCRError already is one sentence; anything else is a bug,
    said plainly (its traceback goes to the log)."""
    if isinstance(exc, DotOCRError):
        return str(exc)
    return f"Unexpected {type(exc).__name__}: {exc}. The log has the details."
