"""One read, from the drag (or file, or clipboard picture) to its outcome: the handle both threads share.

The worker thread runs the engine with the read's `on_text` and `should_stop`; the Tk thread shows it (the
result window pulls the streamed text and the progress on its own clock, so no text is posted twice or lost
before the window opens) and cancels it. Cancelling only sets a flag: the engine asks `should_stop` after every
token and ends within one decode step.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from dotocr.capture import Rect, Region
    from dotocr.engine import AnswerForms, OCRResult

@dataclass(frozen=True)
class Progress:
    """What the window shows while a read runs."""

    elapsed: float
    """Seconds since the read started (waiting for the model included)."""
    tokens: int
    """Tokens written so far (pieces, for a remote server that streams several tokens at once)."""
    tokens_per_second: float | None
    """Since the first token; None before the second."""
    page: int | None = None
    pages: int | None = None


class Reading:
    """A read in flight. Thread-safe: the worker writes, the Tk thread reads and cancels."""

    def __init__(self, anchor: Region | Rect | None = None) -> None:
        self.anchor = anchor
        """What the result window is placed beside: the selected region, a point for a file or the clipboard."""
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._text = ""
        self._tokens = 0
        self._first_token_at: float | None = None
        self._last_token_at: float | None = None
        self._page: tuple[int, int] | None = None

    # -- the engine's hooks (worker thread) --------------------------------------------------------------

    def on_text(self, delta: str) -> None:
        """The engine's streamed text, kept for the window to pull."""
        with self._lock:
            self._text += delta

    def should_stop(self) -> bool:
        """Asked by the engine after every token: counts it and answers whether the read was cancelled."""
        now = time.perf_counter()
        with self._lock:
            self._tokens += 1
            if self._first_token_at is None:
                self._first_token_at = now
            self._last_token_at = now
        return self._cancelled.is_set()

    def next_page(self, number: int, count: int) -> None:
        """A PDF read page by page: the next page starts (a blank line between pages' text)."""
        with self._lock:
            self._page = (number, count)
            if number > 1 and self._text:
                self._text += "\n\n"

    # -- the tray's side (Tk thread) --------------------------------------------------------------------

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def text_from(self, offset: int) -> str:
        """The streamed text from character `offset` on."""
        with self._lock:
            return self._text[offset:]

    def progress(self) -> Progress:
        now = time.perf_counter()
        with self._lock:
            tokens, first, last, page = self._tokens, self._first_token_at, self._last_token_at, self._page
        rate = None
        if first is not None and last is not None and tokens > 1 and last > first:
            rate = (tokens - 1) / (last - first)
        return Progress(now - self.started, tokens, rate, *(page or (None, None)))


@dataclass(frozen=True)
class Outcome:
    """How a read ended, for the window or the toast. A cancelled read has no outcome: nothing is shown."""

    kind: Literal["copied", "empty", "copy_failed", "failed"]
    seconds: float
    text: str = ""
    """The answer (copied, or kept in the history when copying failed)."""
    sentence: str = ""
    """For failures: what went wrong, in one sentence."""
    title: str = ""
    """For failures: the toast's title, when "OCR failed" is not what happened (no picture on the clipboard)."""
    in_history: bool = True
    results: list[OCRResult] = field(default_factory=list)
    """The engine's results (one per PDF page); the low-confidence spans come from here."""
    forms: AnswerForms | None = None
    """The answer written for each kind of paste target (what the window's "Copy as ..." buttons copy)."""

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed over the results, from the engine's own timings."""
        tokens = sum(r.generated_tokens for r in self.results)
        decode = sum(r.timings.get("decode", 0.0) for r in self.results)
        return tokens / decode if tokens > 1 and decode > 0 else None
