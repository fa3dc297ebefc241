"""The tray's words: what a toast or the result window says after a capture, and how an error reads there."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dotocr.desktop.notification.text import truncate
from dotocr.errors import DotOCRError

if TYPE_CHECKING:
    from dotocr.tray.reading import Outcome, Progress

PREVIEW_CHARS = 200


def _preview(text: str) -> str:
    """Lines trimmed, runs of spaces and of blank lines collapsed: a toast has no room for layout."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def summarize_result(text: str, seconds: float) -> tuple[str, str]:
    """(title, body) for the toast after a capture: what was copied and how long it took."""
    if not text.strip():
        return f"Nothing recognised \u00b7 {seconds_text(seconds)}", "The clipboard was left unchanged."
    count = len(text)
    noun = "character" if count == 1 else "characters"
    title = f"Copied {count:,} {noun} \u00b7 {seconds_text(seconds)}"
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


def outcome_toast(outcome: Outcome) -> tuple[str, str]:
    """(title, body) of the toast after a read that no window shows."""
    if outcome.kind in ("copied", "empty"):
        return summarize_result(outcome.text, outcome.seconds)
    if outcome.kind == "copy_failed":
        reason = outcome.sentence.rstrip(".")
        where = "; the text is in History, click it there to copy it again." if outcome.in_history else "."
        return "Could not copy the text", reason + where
    return outcome.title or "OCR failed", outcome.sentence


def outcome_line(outcome: Outcome) -> str:
    """The result window's status line once a read has ended."""
    if outcome.kind == "copied":
        count = len(outcome.text)
        rate = outcome.tokens_per_second
        speed = f" \u00b7 {rate:.1f} tokens/s" if rate is not None else ""
        return (f"Copied {count:,} character{'' if count == 1 else 's'} \u00b7 {seconds_text(outcome.seconds)}"
                f"{speed}")
    if outcome.kind == "empty":
        return f"Nothing recognised \u00b7 {seconds_text(outcome.seconds)} \u00b7 the clipboard was left unchanged."
    if outcome.kind == "copy_failed":
        return "Not copied: " + outcome.sentence
    return outcome.sentence


def progress_line(progress: Progress) -> str:
    """The result window's status line while a read runs: which phase, how long, how fast."""
    page = f"Page {progress.page} of {progress.pages} \u00b7 " if progress.page and progress.pages else ""
    elapsed = seconds_text(progress.elapsed)
    if progress.tokens == 0:
        return f"{page}Reading the picture\u2026 {elapsed}"
    noun = "token" if progress.tokens == 1 else "tokens"
    rate = f" \u00b7 {progress.tokens_per_second:.1f} tokens/s" if progress.tokens_per_second else ""
    return f"{page}Writing\u2026 {elapsed} \u00b7 {progress.tokens} {noun}{rate}"
