"""The capture-and-OCR flow: overlay (or file, or clipboard picture) -> engine -> history -> clipboard, one read
at a time, its outcome handed to a `ReadListener` (the result window or a toast: result_display.py).

It owns what a capture needs between steps: whether the overlay is open, the running read (a `Reading`: its
streamed text, its progress, its cancel flag) and the last region (kept in a small file so "Repeat last
region" survives a restart). The overlay runs on the Tk thread; the read runs on a worker thread, so the tray,
hotkey and overlay stay responsive. A failed or cancelled read never touches the clipboard; a read whose copy
fails stays in the history. A cancelled read frees the tray at once: its worker ends within one decode step,
and a new read simply waits for the engine's lock until then.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from dotocr.desktop.clipboard.base import ClipboardContent
from dotocr.engine import AnswerForms, answer_forms
from dotocr.errors import DotOCRError
from dotocr.storage import write_atomic
from dotocr.tray.messages import error_sentence
from dotocr.tray.picture_sources import PictureError, Pictures, clipboard_pictures, file_pictures
from dotocr.tray.reading import Outcome, Reading
from dotocr.tray.services import Services

if TYPE_CHECKING:
    from dotocr.capture import Rect
    from dotocr.engine import Engine, OCRResult

log = logging.getLogger(__name__)

CLEAR_MS = 100
"""After finished result windows close for a new capture, the time the desktop gets to repaint what they covered
before the screen is grabbed (only then; a capture with no window open grabs at once)."""


class ReadListener(Protocol):
    """Who shows a read (result_display.ResultDisplay). Called from any thread; it hops to the Tk thread itself."""

    def started(self, reading: Reading) -> None: ...

    def finished(self, reading: Reading, outcome: Outcome) -> None: ...

    def cancelled(self, reading: Reading) -> None: ...

    def clear_for_capture(self) -> bool:
        """Tk thread: close the finished result windows nobody is editing; True when one closed."""
        ...


class CaptureFlow:
    def __init__(self, services: Services, *, engine: Callable[[], Engine], changed: Callable[[], None],
                 notify: Callable[[str, str], None], listener: ReadListener,
                 quitting: Callable[[], bool], last_region_path: Path | None = None) -> None:
        self._services = services
        self._listener = listener
        self._engine = engine
        """The engine for a read, holding the tray's current settings; may wait for it to be created or to take
        new settings, raises a DotOCRError when it cannot be."""
        self._changed = changed
        self._notify = notify
        self._quitting = quitting
        self._lock = threading.Lock()
        self._reading: Reading | None = None
        self._jobs: list[threading.Thread] = []
        self._selecting = False
        self._last_region_path = last_region_path
        self.last_region: Any | None = _read_region(last_region_path)

    @property
    def busy(self) -> bool:
        """A read is running (or waiting for the engine), and was not cancelled."""
        return self._reading is not None

    # -- the overlay (Tk thread) -----------------------------------------------------------------------

    def hotkey_pressed(self) -> None:
        """The hotkey opens the overlay; pressed again it closes the overlay, or stops the read it started: an
        overlay or a read can always be dismissed the way it was called up, whatever has the keyboard focus."""
        if self._quitting():
            return
        if self._selecting:
            self.cancel()
        elif self.busy:
            self.cancel_reading()
        else:
            self.capture()

    def cancel(self) -> None:
        cancel = self._services.cancel_selection
        if cancel is None:
            return
        try:
            cancel()
        except Exception:
            log.exception("Closing the overlay failed")
        self._selecting = False

    def capture(self) -> None:
        """Hotkey / menu / second launch: open the overlay. Refused while a read runs."""
        if self._quitting() or self._selecting:
            return
        if self.busy:
            self.refuse_busy()
            return
        select = self._services.select_region
        if select is None:
            self._notify("Capture is not available", "No screen overlay could be opened on this desktop.")
            return
        self._selecting = True
        self._after_clearing(lambda: self._open_overlay(select))

    def _open_overlay(self, select: Callable[[Callable[..., None]], None]) -> None:
        if not self._selecting or self._quitting():
            return  # dismissed while the last result window was closing
        try:
            select(self._on_region_selected)
        except Exception as exc:
            self._selecting = False
            self._capture_failed("Opening the overlay failed", exc, "The screen could not be captured")

    def _after_clearing(self, grab: Callable[[], None]) -> None:
        """Run `grab` once the finished result windows are off the screen: a new capture means the person has
        moved on, and the frozen screen must not show the last result (one being edited stays)."""
        schedule = self._services.schedule
        if self._listener.clear_for_capture() and schedule is not None:
            schedule(CLEAR_MS, grab)
        else:
            grab()

    def _on_region_selected(self, region: Any, crop: Image.Image | None) -> None:
        self._selecting = False
        # The overlay's Tk objects are gone now: collect any cycles among them here, on the Tk thread. Left to
        # a later collection on a worker thread (the engine's unload collects garbage), Tk aborts the process.
        gc.collect()
        if region is None or crop is None:
            return  # cancelled: nothing changes, the clipboard keeps its content
        self._remember(region)
        self.start_ocr(crop, anchor=region)

    def repeat_last_region(self) -> None:
        if self.busy:
            self.refuse_busy()
            return
        region = self.last_region
        if region is None:
            self._notify("No region yet", "Capture a region first; then it can be repeated without dragging.")
            return
        grab_region = self._services.grab_region
        if grab_region is None:
            self._notify("Capture is not available", "The screen cannot be grabbed on this desktop.")
            return
        self._after_clearing(lambda: self._grab_again(grab_region, region))

    def _grab_again(self, grab_region: Callable[[Any], Image.Image], region: Any) -> None:
        try:
            crop = grab_region(region)
        except Exception as exc:
            self._capture_failed("Grabbing the last region failed", exc,
                                 "The last region could not be grabbed again")
            return
        self.start_ocr(crop, anchor=region)

    def read_image_file(self) -> None:
        """Menu "OCR an image file…": a file dialog (Tk thread), then the same read as a capture."""
        if self.busy:
            self.refuse_busy()
            return
        ask = self._services.ask_image_file
        if ask is None:
            self._notify("Not available", "No file dialog can be opened on this desktop.")
            return
        path = ask()
        if path is not None:
            self.start_ocr(file_pictures(Path(path)), anchor=self._pointer())

    def read_clipboard_picture(self) -> None:
        """Menu "OCR the clipboard's picture": the clipboard is read on the worker thread."""
        if self.busy:
            self.refuse_busy()
            return
        self.start_ocr(clipboard_pictures(self._services.grab_clipboard_picture), anchor=self._pointer())

    def _pointer(self) -> Rect | None:
        """Where a read that has no region shows its window: at the pointer (where the menu was)."""
        pointer = self._services.pointer
        if pointer is None:
            return None
        try:
            from dotocr.capture import Rect

            x, y = pointer()
            return Rect(x, y, 1, 1)
        except Exception:
            log.debug("The pointer's position is unknown", exc_info=True)
            return None

    def _capture_failed(self, what: str, exc: Exception, sentence: str) -> None:
        """A CaptureError already says what to do, as is; anything else is a bug and gets a traceback."""
        if isinstance(exc, DotOCRError):
            log.error("%s: %s", what, exc)
            self._notify("Capture failed", str(exc))
        else:
            log.exception(what)
            self._notify("Capture failed", f"{sentence} ({exc}).")

    def refuse_busy(self) -> None:
        self._notify("Still reading", "The last capture is still being read; press the hotkey again or choose "
                     "Cancel reading in the menu to stop it.")

    # -- the read (worker thread) ------------------------------------------------------------------------

    def start_ocr(self, source: Image.Image | Path | Pictures, *, anchor: Any | None = None) -> bool:
        """Read `source` (a picture, a file, or `Pictures` made on the worker thread) on a worker thread, its
        window beside `anchor`; False (with a toast) if a read is already running."""
        with self._lock:
            refused = self._reading is not None
            if not refused:
                reading = self._reading = Reading(anchor)
        if refused:
            self.refuse_busy()
            return False
        self._changed()
        self._listener.started(reading)
        job = threading.Thread(target=self._read, args=(reading, source), name="dotocr-ocr", daemon=True)
        self._jobs = [j for j in self._jobs if j.is_alive()] + [job]
        job.start()
        return True

    def cancel_reading(self, reading: Reading | None = None) -> bool:
        """Esc, Cancel, the hotkey again, or the menu's "Cancel reading": stop the running read (or `reading`,
        if it still runs). The engine stops within one decode step; the clipboard keeps what it had, and the
        tray is free for the next capture at once. False when there was nothing to stop."""
        with self._lock:
            current = self._reading
            if current is None or (reading is not None and reading is not current):
                return False
            self._reading = None
        current.cancel()
        log.info("Reading cancelled after %.1f s; the clipboard keeps what it had", current.progress().elapsed)
        self._changed()
        self._listener.cancelled(current)
        return True

    def wait_idle(self, timeout: float) -> bool:
        """For tests: wait until every read, a cancelled one still stopping included, has ended."""
        deadline = time.monotonic() + timeout
        for job in list(self._jobs):
            job.join(max(0.0, deadline - time.monotonic()))
        return not any(job.is_alive() for job in self._jobs)

    def _read(self, reading: Reading, source: Image.Image | Path | Pictures) -> None:
        started = time.monotonic()
        results: list[OCRResult] = []
        try:
            pictures: Sequence[Any] = source() if callable(source) else [source]
            engine = self._engine()
            count = len(pictures)
            for number, picture in enumerate(pictures, 1):
                if reading.cancelled:
                    break
                if count > 1:
                    reading.next_page(number, count)
                # the engine holds the tray's settings: prompt, output format
                results.append(engine.ocr(picture, on_text=reading.on_text, should_stop=reading.should_stop))
            if reading.cancelled:
                return  # nothing is delivered: the clipboard keeps what it had
            # one page or a PDF's pages: tables as tables (HTML beside TSV text), pages joined by a blank line
            forms = answer_forms(results, table_text=engine.settings.table_text)
            outcome = self._deliver(forms, time.monotonic() - started, results)
        except Exception as exc:
            if reading.cancelled:
                log.info("A cancelled read ended with %s", type(exc).__name__)
                return
            log.error("OCR failed: %s", exc, exc_info=not isinstance(exc, DotOCRError))
            outcome = Outcome("failed", time.monotonic() - started, sentence=error_sentence(exc), results=results,
                              title="No picture to read" if isinstance(exc, PictureError) else "")
        finally:
            with self._lock:
                if self._reading is reading:
                    self._reading = None
            self._changed()
        self._listener.finished(reading, outcome)

    def _deliver(self, forms: AnswerForms, seconds: float, results: list[OCRResult]) -> Outcome:
        """The answer to the history and the clipboard: a table as a real table (HTML) beside its plain text."""
        text = forms.text
        if not text.strip():
            return Outcome("empty", seconds, results=results)  # the clipboard keeps what it had
        in_history = True
        try:  # history first: a clipboard failure must not lose the text
            self._services.history.add(text, prompt=results[-1].prompt if results else "text")
        except Exception:
            in_history = False
            log.exception("Saving the result to the history failed")
        self._changed()
        try:
            self._services.clipboard.copy(ClipboardContent(text, forms.html) if forms.html is not None else text)
        except Exception as exc:
            log.error("Copying to the clipboard failed: %s", exc)
            return Outcome("copy_failed", seconds, text, sentence=error_sentence(exc), in_history=in_history,
                           results=results, forms=forms)
        return Outcome("copied", seconds, text, results=results, forms=forms)

    # -- the last region ---------------------------------------------------------------------------------

    def _remember(self, region: Any) -> None:
        self.last_region = region
        path = self._last_region_path
        if path is None:
            return
        try:
            write_atomic(path, json.dumps(region.to_dict()))
        except (OSError, AttributeError, TypeError):
            log.exception("Saving the last region failed")


def _read_region(path: Path | None) -> Any | None:
    if path is None or not path.exists():
        return None
    try:
        from dotocr.capture import Region

        return Region.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except Exception:
        log.warning("Ignoring the unreadable last region in %s", path)
        return None
