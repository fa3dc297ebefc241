"""Clipboard access. Blank text is never written, so an empty OCR result keeps what the user had."""

from __future__ import annotations

from .base import ClipboardBackend, ClipboardError
from .pyperclip_backend import PyperclipClipboard, _missing_tool_message

BACKENDS: tuple[type, ...] = (PyperclipClipboard,)

__all__ = ["BACKENDS", "ClipboardBackend", "ClipboardError", "get_clipboard"]


def get_clipboard() -> ClipboardBackend:
    """The first compatible backend; ClipboardError naming what to install where none is."""
    for backend in BACKENDS:
        if backend.is_compatible():
            return backend()
    raise ClipboardError(_missing_tool_message())
