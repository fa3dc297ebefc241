"""The engine's state, as one explicit type that every front end shows the same way.

The icon, its tooltip, the tray menu, the server's `/health` and the CLI all read an `EngineState`; none of
them re-derives a status from flags of its own. `device` and `precision` are what actually runs once a model
is loaded (for example bf16 where `auto` was asked), so a front end compares and shows the resolved plan,
never the requested strings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(str, enum.Enum):
    """The engine's life cycle. A `str` so `state.status == "ready"` and JSON output keep working."""

    UNLOADED = "unloaded"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


LOADING_STATUSES = frozenset({Status.DOWNLOADING, Status.LOADING})
"""A model is on its way: OCR calls wait for it, servers answer 503 with Retry-After."""


@dataclass(frozen=True)
class EngineState:
    status: Status
    detail: str = ""
    progress: float | None = None
    """0..1 while downloading, else None."""
    device: str | None = None
    """What runs, once known: "cpu", "cuda" or "remote ..."."""
    precision: str | None = None
    """What runs, once known: "bf16", "fp16", "fp32", "4bit", a GGUF type such as "q8_0", or "unknown"."""
    decoder: str | None = None
    """Which decoder generates the text: "torch", "llamacpp" or "remote"."""
    gguf_type: str | None = None
    """With the llama.cpp decoder: its GGUF weight type ("q8_0", ...)."""

    @property
    def loading(self) -> bool:
        return self.status in LOADING_STATUSES

    @property
    def plan_text(self) -> str:
        """What runs, in the words a menu or a log line uses: "bf16 on cpu (llamacpp)"."""
        if not self.precision or not self.device:
            return ""
        text = f"{self.precision} on {self.device}"
        if self.decoder == "llamacpp":
            return f"{text}, llama.cpp {(self.gguf_type or '').upper()}".rstrip()
        return text
