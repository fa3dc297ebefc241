"""The capture-and-OCR flow: overlay -> crop -> engine -> history -> clipboard -> toast, one read at a time.

It owns what a capture needs between steps: whether the overlay is open, the running read (its thread and
the busy flag), and the last region (kept in a small file so "Repeat last region" survives a restart). The
overlay runs on the Tk thread; the read runs on a worker thread, so the tray, hotkey and overlay stay
responsive. A failed read never touches the clipboard; a read whose copy fails stays in the history.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from dotocr.desktop.clipboard.base import ClipboardContent
from dotocr.engine import AnswerForms, answer_forms
from dotocr.errors import DotOCRError
from dotocr.storage import write_atomic
from dotocr.tray.messages import error_sentence, summarize_result
from dotocr.tray.services import Services

if TYPE_CHECKING:
    from dotocr.engine import Engine

log = logging.getLogger(__name__)


class CaptureFlow:
    def __init__(self, services: Services, *, engine: Callable[[], Engine], changed: Callable[[], None],
                 notify: Callable[[str, str], None],
                 quitting: Callable[[], bool], last_region_path: Path | None = None) -> None:
        self._services = services
        self._engine = engine
        """The engine for a read, holding the tray's current settings; may wait for it to be created or to take
        new settings, raises a DotOCRError when it cannot be."""
        self._changed = changed
        self._notify = notify
        self._quitting = quitting
        self._lock = threading.Lock()
        self._busy = False
        self._job: threading.Thread | None = None
        self._selecting = False
        self._last_region_path = last_region_path
        self.last_region: Any | None = _read_region(last_region_path)

    @property
    def busy(self) -> bool:
        """A read is running (or waiting for the engine)."""
        return self._busy

    # -- the overlay (Tk thread) -----------------------------------------------------------------------

    def hotkey_pressed(self) -> None:
        """The hotkey opens the overlay, or closes it when it is open: an overlay that lost the keyboard
        focus (so Esc does not reach it) can always be dismissed the way it was called up."""
        if self._selecting and not self._quitting():
            self.cancel()
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
        if self._busy:
            self.refuse_busy()
            return
        select = self._services.select_region
        if select is None:
            self._notify("Capture is not available", "No screen overlay could be opened on this desktop.")
            return
        self._selecting = True
        try:
            select(self._on_region_selected)
        except Exception as exc:
            self._selecting = False
            self._capture_failed("Opening the overlay failed", exc, "The screen could not be captured")

    def _on_region_selected(self, region: Any, crop: Image.Image | None) -> None:
        self._selecting = False
        # The overlay's Tk objects are gone now: collect any cycles among them here, on the Tk thread. Left to
        # a later collection on a worker thread (the engine's unload collects garbage), Tk aborts the process.
        gc.collect()
        if region is None or crop is None:
            return  # cancelled: nothing changes, the clipboard keeps its content
        self._remember(region)
        self.start_ocr(crop)

    def repeat_last_region(self) -> None:
        if self._busy:
            self.refuse_busy()
            return
        region = self.last_region
        if region is None:
            self._notify("No region yet", "Capture a region first; then it can be repeated without dragging.")
            return
        if self._services.grab_region is None:
            self._notify("Capture is not available", "The screen cannot be grabbed on this desktop.")
            return
        try:
            crop = self._services.grab_region(region)
        except Exception as exc:
            self._capture_failed("Grabbing the last region failed", exc,
                                 "The last region could not be grabbed again")
            return
        self.start_ocr(crop)

    def _capture_failed(self, what: str, exc: Exception, sentence: str) -> None:
        """A CaptureError already says what to do, as is; anything else is a bug and gets a traceback."""
        if isinstance(exc, DotOCRError):
            log.error("%s: %s", what, exc)
            self._notify("Capture failed", str(exc))
        else:
            log.exception(what)
            self._notify("Capture failed", f"{sentence} ({exc}).")

    def refuse_busy(self) -> None:
        self._notify("Still reading", "The last capture is still being read; try again in a moment.")

    # -- the read (worker thread) ------------------------------------------------------------------------

    def start_ocr(self, image: Image.Image) -> bool:
        """Read `image` on a worker thread; False (with a toast) if one is already running."""
        with self._lock:
            refused = self._busy
            self._busy = True
        if refused:
            self.refuse_busy()
            return False
        self._changed()
        job = threading.Thread(target=self._read, args=(image,), name="dotocr-ocr", daemon=True)
        self._job = job
        job.start()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """For tests: wait until the running read, if any, has finished."""
        job = self._job
        if job is not None:
            job.join(timeout)
            return not job.is_alive()
        return True

    def _read(self, image: Image.Image) -> None:
        started = time.monotonic()
        try:
            engine = self._engine()
            result = engine.ocr(image)  # the engine holds the tray's settings: prompt, output format
            forms = answer_forms(result, table_text=engine.settings.table_text)
            self._deliver(forms, time.monotonic() - started, result.prompt)
        except Exception as exc:
            log.error("OCR failed: %s", exc, exc_info=not isinstance(exc, DotOCRError))
            self._notify("OCR failed", error_sentence(exc))
        finally:
            with self._lock:
                self._busy = False
            self._changed()

    def _deliver(self, forms: AnswerForms, seconds: float, prompt: str) -> None:
        """The answer to the history and the clipboard: a table as a real table (HTML) beside its TSV text."""
        text = forms.text
        if not text.strip():
            self._notify(*summarize_result("", seconds))  # the clipboard keeps what it had
            return
        in_history = True
        try:  # history first: a clipboard failure must not lose the text
            self._services.history.add(text, prompt=prompt)
        except Exception:
            in_history = False
            log.exception("Saving the result to the history failed")
        self._changed()
        try:
            self._services.clipboard.copy(ClipboardContent(text, forms.html) if forms.html is not None else text)
        except Exception as exc:
            log.error("Copying to the clipboard failed: %s", exc)
            reason = error_sentence(exc).rstrip(".")
            where = "; the text is in History, click it there to copy it again." if in_history else "."
            self._notify("Could not copy the text", reason + where)
            return
        self._notify(*summarize_result(text, seconds))

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
