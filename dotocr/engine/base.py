"""What every engine shares, local or remote: settings, the state front ends show, the bounded line of callers,
and streaming on top of `ocr`. Front ends program against this surface only."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import DotOCRError, EngineBusyError
from .results import OCRResult

log = logging.getLogger("dotocr.engine")


@dataclass(frozen=True)
class EngineState:
    status: str  # unloaded | downloading | loading | ready | busy | error
    detail: str = ""
    progress: float | None = None


class Engine:
    """Subclasses implement `load`, `unload`, `reconfigure`, `ocr`, `device` and `precision`."""

    def __init__(self, settings: Settings, *, on_state: Callable[[EngineState], None] | None = None,
                 max_waiting: int | None = None) -> None:
        self._settings = settings
        self._on_state = on_state
        self._max_waiting = max_waiting
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._state = EngineState("unloaded")

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def waiting(self) -> int:
        """Callers inside `ocr`, the running one included."""
        return self._waiting

    def ocr(self, image: Any, **kwargs: Any) -> OCRResult:
        raise NotImplementedError

    def _resolve_prompt(self, prompt: str | None, output_format: str | None, bbox: Any,
                        instruction: str | None) -> str:
        """The prompt mode for one call: a bbox means grounding, Markdown output means layout, else settings."""
        if prompt is None:
            if bbox is not None:
                prompt = "grounding"
            elif output_format == "markdown":
                prompt = "layout"
            else:
                prompt = self._settings.prompt
        if instruction is None:
            if prompt == "grounding" and bbox is None:
                raise DotOCRError("The grounding prompt needs a bounding box (x1, y1, x2, y2 in image pixels).")
            if prompt != "grounding" and bbox is not None:
                raise DotOCRError(f"A bounding box only applies to the grounding prompt, not to {prompt!r}; "
                                  "drop the box or use the grounding prompt.")
        return prompt

    def stream(self, image: Any, **kwargs: Any) -> Iterator[str | OCRResult]:
        """Yield text pieces as they are decoded, then the final `OCRResult`; errors are raised here."""
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            try:
                pieces.put(("done", self.ocr(image, on_text=lambda text: pieces.put(("text", text)), **kwargs)))
            except BaseException as exc:  # handed to the consumer's thread
                pieces.put(("error", exc))

        threading.Thread(target=work, name="dotocr-stream", daemon=True).start()
        while True:
            kind, value = pieces.get()
            if kind == "error":
                raise value
            yield value
            if kind == "done":
                return

    def _set_state(self, status: str, detail: str = "", progress: float | None = None) -> None:
        self._state = EngineState(status, detail, progress)
        if self._on_state is not None:
            try:
                self._on_state(self._state)
            except Exception:  # a front end's display problem must never break inference
                log.exception("state callback failed")

    @contextlib.contextmanager
    def _queue_slot(self) -> Iterator[None]:
        """Admit a caller unless `max_waiting` are already waiting behind the running one."""
        with self._waiting_lock:
            if self._max_waiting is not None and self._waiting > self._max_waiting:
                raise EngineBusyError("The model is busy and the queue is full; try again in a moment.")
            self._waiting += 1
        try:
            yield
        finally:
            with self._waiting_lock:
                self._waiting -= 1
