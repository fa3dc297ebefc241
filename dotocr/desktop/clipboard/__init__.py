"""Clipboard access, text and HTML at once where the platform allows. Blank text is never written, so an empty OCR
result keeps what the user had.

`get_clipboard()` returns a `Clipboard` that tries its handlers in order at call time (NormCap's model): the Win32
clipboard (CF_UNICODETEXT + CF_HTML) on Windows, our own X11 selection owner (UTF8_STRING, text/html, ...) where
there is an X display and python-xlib, then pyperclip (text only: macOS, Wayland, or xclip/xsel). A handler that
fails hands the copy to the next one, so the text lands even where the HTML cannot.
"""

from __future__ import annotations

import logging

from .base import ClipboardBackend, ClipboardContent, ClipboardError, ClipboardHandler, as_content
from .pyperclip_backend import PyperclipClipboard, _missing_tool_message
from .windows import WindowsClipboard
from .x11_selection import X11SelectionClipboard

log = logging.getLogger(__name__)

BACKENDS: tuple[type, ...] = (WindowsClipboard, X11SelectionClipboard, PyperclipClipboard)
"""The handlers, richest first."""

__all__ = ["BACKENDS", "Clipboard", "ClipboardBackend", "ClipboardContent", "ClipboardError", "ClipboardHandler",
           "get_clipboard"]


class Clipboard:
    """The handlers that suit this system, tried in order on every copy."""

    def __init__(self, handlers: tuple[ClipboardHandler, ...]) -> None:
        self._handlers = handlers

    @property
    def name(self) -> str:
        """The handlers usable now, e.g. "X11 selection (text and HTML), then pyperclip (text only)"."""
        return ", then ".join(handler.name for handler in self.usable()) or "none"

    @property
    def carries_html(self) -> bool:
        usable = self.usable()
        return bool(usable) and usable[0].carries_html

    def usable(self) -> list[ClipboardHandler]:
        return [handler for handler in self._handlers if _usable(handler)]

    def copy(self, content: str | ClipboardContent) -> bool:
        """Put `content` on the clipboard (True); blank text writes nothing (False). ClipboardError, with the last
        handler's sentence, when every handler failed."""
        content = as_content(content)
        if not isinstance(content.text, str) or not content.text.strip():
            return False
        failure: ClipboardError | None = None
        for handler in self.usable():
            try:
                handler.copy(content)
            except ClipboardError as exc:
                log.warning("Clipboard through %s failed: %s", handler.name, exc)
                failure = exc
                continue
            if failure is not None or (content.html is not None and not handler.carries_html):
                log.info("Copied through %s (text only)", handler.name)
            return True
        raise failure or ClipboardError(_missing_tool_message())

    def paste(self) -> str:
        """The clipboard's text, from the first handler that can read it."""
        failure: ClipboardError | None = None
        for handler in self.usable():
            try:
                return handler.paste()
            except ClipboardError as exc:
                failure = exc
        raise failure or ClipboardError(_missing_tool_message())


def _usable(handler: ClipboardHandler) -> bool:
    try:
        return handler.is_compatible() and handler.is_installed()
    except Exception:
        return False


def get_clipboard() -> Clipboard:
    """The clipboard of this system; ClipboardError naming what to install where no handler can run."""
    clipboard = Clipboard(tuple(backend() for backend in BACKENDS))
    if not clipboard.usable():
        raise ClipboardError(_missing_tool_message())
    return clipboard
