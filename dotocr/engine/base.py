"""What every engine shares, local or remote: settings, the state front ends show, and the prompt rules.

Front ends program against this surface only: `load`, `unload`, `reconfigure`, `ocr`, `state`, `device`,
`precision`. Waiting room and deadlines belong to the caller (the server has its own gate); an engine runs one
generation at a time and callers simply wait on its lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..config import Settings
from .inputs.prompts import resolve_prompt
from .results import OCRResult
from .status import EngineState, Status

log = logging.getLogger("dotocr.engine")


class Engine:
    """Subclasses implement `load`, `unload`, `reconfigure` and `ocr`; they report through `_set_state`."""

    def __init__(self, settings: Settings, *, on_state: Callable[[EngineState], None] | None = None) -> None:
        self._settings = settings
        self._on_state = on_state
        self._state = EngineState(Status.UNLOADED)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def device(self) -> str | None:
        return self._state.device

    @property
    def precision(self) -> str | None:
        return self._state.precision

    def load(self) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        raise NotImplementedError

    def reconfigure(self, settings: Settings) -> None:
        raise NotImplementedError

    def ocr(self, image: Any, **kwargs: Any) -> OCRResult:
        raise NotImplementedError

    def _resolve_prompt(self, prompt: str | None, output_format: str | None, bbox: Any,
                        instruction: str | None) -> str:
        return resolve_prompt(prompt, output_format=output_format, bbox=bbox, instruction=instruction,
                              default=self._settings.prompt)

    def _set_state(self, status: Status, detail: str = "", progress: float | None = None, *,
                   device: str | None = None, precision: str | None = None, decoder: str | None = None,
                   gguf_type: str | None = None) -> None:
        self._state = EngineState(Status(status), detail, progress, device, precision, decoder, gguf_type)
        if self._on_state is not None:
            try:
                self._on_state(self._state)
            except Exception:  # a front end's display problem must never break inference
                log.exception("state callback failed")
