"""Where a read is shown: the result window, a toast, or the window first and no toast. One owner, on the Tk thread.

The setting `result_window` decides:
- "never": today's toast only (what was copied and how long it took, or why nothing was);
- "always": every read opens the window at once; its outcome is shown there, not in a toast;
- "auto" (the default): the window opens at once when no toast can be seen here (no notification daemon, or
  only the log), else only when a read is still running after `AUTO_DELAY_MS`, so a quick read on a GPU just
  toasts and a slow one on a CPU shows its progress and can be stopped with Esc. A read the window shows gets
  no toast.

The capture flow calls in from any thread. A read that can have no window (no Tk, "never") is toasted from
the worker, as before the window existed; everything else runs on the Tk thread through `post`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dotocr.desktop.clipboard.base import ClipboardContent
from dotocr.tray.messages import error_sentence, outcome_line, outcome_toast
from dotocr.tray.reading import Outcome, Reading

log = logging.getLogger(__name__)

AUTO_DELAY_MS = 1000
"""In "auto", a read still running after this long opens the window (a GPU reads a line in less)."""

CopyChoice = tuple[str, Callable[[str], None]]
"""A copy button: its label and what it does with the window's text (as edited); raises with a sentence when
the copy fails. The first choice is the plain one: Ctrl+C uses it too."""

Span = tuple[int, int]
"""Characters [start, end) of the final text, underlined in the window as read with low confidence."""


class ResultView(Protocol):
    """What the display needs of a window (result_window.ResultWindow)."""

    @property
    def is_open(self) -> bool: ...

    @property
    def edited(self) -> bool:
        """A finished window whose text the person changed: it stays until they close it."""
        ...

    def finish(self, text: str | None, *, status: str, problem: bool = False,
               copy_choices: Sequence[CopyChoice] = (), low_confidence: Sequence[Span] = ()) -> None: ...

    def close(self) -> None: ...


WindowFactory = Callable[[Reading, Callable[[], None]], ResultView]
"""Opens the window for a read (Tk thread); the callable is what Esc, Cancel and closing it do while it reads."""


class ResultDisplay:
    def __init__(self, *, post: Callable[..., None], notify: Callable[[str, str], None], mode: Callable[[], str],
                 copy: Callable[[str | ClipboardContent], Any], open_window: WindowFactory | None = None,
                 schedule: Callable[[int, Callable[[], None]], Any] | None = None,
                 toasts_visible: Callable[[], bool] = lambda: True) -> None:
        self._post = post
        self._notify = notify
        self._mode = mode
        self._copy = copy
        self.open_window = open_window
        """None where no window can be drawn (display-free tests): every read is a toast."""
        self.schedule = schedule
        """Tk's `after`, for "auto"'s delay; without it "auto" opens the window only when toasts cannot be seen."""
        self.toasts_visible = toasts_visible
        self.cancel: Callable[[Reading], Any] = lambda _reading: False
        """Stops a read (the flow's `cancel_reading`), set by the controller once the flow exists."""
        self._lock = threading.Lock()
        self._toast_only: set[Reading] = set()
        """Reads that will have no window, decided when they start (any thread, so behind the lock)."""
        self._windows: dict[Reading, ResultView] = {}
        self._pending: set[Reading] = set()
        self._finished: list[ResultView] = []

    # -- the flow's listener (any thread) ----------------------------------------------------------------

    def started(self, reading: Reading) -> None:
        if self.open_window is None or self._mode() == "never":
            with self._lock:
                self._toast_only.add(reading)
            return
        self._post(self._started, reading)

    def finished(self, reading: Reading, outcome: Outcome) -> None:
        with self._lock:
            toast_only = reading in self._toast_only
            self._toast_only.discard(reading)
        if toast_only:
            self._notify(*outcome_toast(outcome))
        else:
            self._post(self._show_outcome, reading, outcome)

    def cancelled(self, reading: Reading) -> None:
        with self._lock:
            self._toast_only.discard(reading)
        self._post(self._close_for, reading)

    # -- Tk thread -----------------------------------------------------------------------------------------

    def window_for(self, reading: Reading) -> ResultView | None:
        return self._windows.get(reading)

    @property
    def open_windows(self) -> list[ResultView]:
        """The windows on screen, reading or finished, oldest first."""
        return [w for w in [*self._finished, *self._windows.values()] if w.is_open]

    def clear_for_capture(self) -> bool:
        """A new capture starts: finished windows nobody edits close, so the frozen screen is the person's, not
        ours. True when one closed (the screen needs a moment to repaint under it)."""
        closed = False
        for window in self._finished:
            if window.is_open and not window.edited:
                window.close()
                closed = True
        self._finished = [w for w in self._finished if w.is_open]
        return closed

    def close_all(self) -> None:
        """Quit: every window goes, a finished one being edited too (its text is in the history)."""
        for window in [*self._windows.values(), *self._finished]:
            window.close()
        self._windows.clear()
        self._pending.clear()
        self._finished.clear()

    def _started(self, reading: Reading) -> None:
        mode = self._mode()
        if reading.cancelled or self.open_window is None:
            return
        if mode == "always" or not self._safe_toasts_visible():
            self._open(reading)
        elif self.schedule is not None:
            self._pending.add(reading)
            self.schedule(AUTO_DELAY_MS, lambda: self._open_if_running(reading))

    def _open_if_running(self, reading: Reading) -> None:
        if reading in self._pending:
            self._pending.discard(reading)
            self._open(reading)

    def _open(self, reading: Reading) -> None:
        assert self.open_window is not None
        try:
            self._windows[reading] = self.open_window(reading, lambda: self.cancel(reading))
        except Exception:  # no window after all: the outcome still gets its toast
            log.exception("The result window could not be opened")

    def _show_outcome(self, reading: Reading, outcome: Outcome) -> None:
        self._pending.discard(reading)
        window = self._windows.pop(reading, None)
        if window is None or not window.is_open:
            self._notify(*outcome_toast(outcome))
            return
        self._finished = [w for w in self._finished if w.is_open] + [window]
        problem = outcome.kind in ("failed", "copy_failed")
        has_text = outcome.kind in ("copied", "copy_failed")
        window.finish(outcome.text if has_text else None, status=outcome_line(outcome), problem=problem,
                      copy_choices=self.copy_choices(outcome) if has_text else (),
                      low_confidence=self.low_confidence(outcome) if has_text else ())

    def _close_for(self, reading: Reading) -> None:
        self._pending.discard(reading)
        window = self._windows.pop(reading, None)
        if window is not None:
            window.close()

    def _safe_toasts_visible(self) -> bool:
        try:
            return self.toasts_visible()
        except Exception:
            log.exception("Checking for a notification daemon failed")
            return True

    # -- what a finished window offers ------------------------------------------------------------------------

    def copy_choices(self, outcome: Outcome) -> list[CopyChoice]:
        """The window's copy buttons: "Copy" (the text as shown, edits included), then, where the answer's forms
        differ from it, "Copy as Markdown" and "Copy as table" (HTML with real tables beside the plain text; "Copy
        with formulas" when only formulas need it). Those copy the answer as read, not the edits."""
        choices: list[CopyChoice] = [("Copy", self._copy_again)]
        forms = outcome.forms
        if forms is None:
            return choices
        if "markdown" in forms.offered:
            choices.append(("Copy as Markdown", lambda _shown: self._copy_again(forms.markdown)))
        if forms.html is not None:
            rich = ClipboardContent(forms.text, forms.html)
            choices.append(("Copy as table" if forms.tables else "Copy with formulas",
                            lambda _shown: self._copy_again(rich)))
        return choices

    def low_confidence(self, outcome: Outcome) -> list[Span]:
        """Spans of `outcome.text` to underline: each result's `low_confidence` (characters its tokens wrote with
        less than even odds), moved to where that result's text stands in the displayed text (a PDF's pages
        joined). A result whose text is not found there, or that could not tell (None), marks nothing."""
        return displayed_spans(outcome.text, [(r.text, r.low_confidence) for r in outcome.results])

    def _copy_again(self, text: str | ClipboardContent) -> None:
        try:
            copied = self._copy(text)
        except Exception as exc:
            raise CopyError(error_sentence(exc)) from exc
        if copied is False:
            raise CopyError("There is no text to copy.")


def displayed_spans(shown: str, parts: Sequence[tuple[str, Sequence[Sequence[int]] | None]]) -> list[Span]:
    """`parts` are (a result's text, its spans of that text), in order; their spans as offsets of `shown`, which
    holds those texts in that order (joined by anything). Spans are clipped to their own text."""
    spans: list[Span] = []
    cursor = 0
    for text, marked in parts:
        found = shown.find(text, cursor)
        if found < 0:
            continue
        for span in marked or ():
            start, end = max(0, int(span[0])), min(len(text), int(span[1]))
            if start < end:
                spans.append((found + start, found + end))
        cursor = found + len(text)
    return spans


class CopyError(Exception):
    """A copy button failed; the message is the sentence the window shows."""
