"""Clipboard through pyperclip, text only: native on Windows and macOS, xclip/xsel on X11, wl-clipboard on Wayland.

The last handler: where the richer ones cannot run (no python-xlib, Wayland, macOS) the text still lands. With
xclip the X selection only lives while an owner process runs; pyperclip starts `xclip`, which forks and stays in
the background as the owner until something else is copied, so the text outlives both the call and our process.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable

from .base import ClipboardContent, ClipboardError

# Mechanisms that are safe from any thread of a long-running tray (Qt's needs its own event loop).
_USABLE = {"windows", "pbcopy", "pyobjc", "osx_pbcopy", "osx_pyobjc", "xclip", "xsel", "wl_clipboard",
           "klipper", "wsl", "dev_clipboard"}


# Mechanisms whose copy returns before a forked child owns the selection.
_FORKING = {"xclip", "xsel", "wl_clipboard"}
_OWNER_TIMEOUT = 2.0


def _missing_tool_message() -> str:
    if sys.platform.startswith("linux"):
        tools = [tool for tool in ("xclip", "xsel", "wl-copy") if shutil.which(tool)]
        if tools and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return (f"{tools[0]} is installed but there is no display session (DISPLAY is not set); the "
                    "clipboard works inside a desktop session.")
        return ("No clipboard tool was found: install xclip (e.g. `sudo apt install xclip`), "
                "or wl-clipboard on Wayland.")
    return "No way to reach the clipboard was found on this system."


def _mechanism() -> tuple[str, Callable[[str], None], Callable[[], str]] | None:
    import pyperclip

    copy, paste = pyperclip.determine_clipboard()
    if not copy:  # pyperclip's "no clipboard" stand-in is falsy
        return None
    name = getattr(copy, "__name__", type(copy).__name__).removeprefix("copy_")
    if name not in _USABLE:
        return None
    return name, copy, paste


class PyperclipClipboard:
    """The mechanism is chosen at the first copy or paste, from the environment at that moment."""

    name = "pyperclip (text only)"
    carries_html = False
    install_hint = "install xclip (e.g. `sudo apt install xclip`), or wl-clipboard on Wayland"

    def __init__(self) -> None:
        self._found: tuple[str, Callable[[str], None], Callable[[], str]] | None = None

    @staticmethod
    def is_compatible() -> bool:
        return True

    @staticmethod
    def is_installed() -> bool:
        try:
            return _mechanism() is not None
        except Exception:
            return False

    def _use(self) -> tuple[str, Callable[[str], None], Callable[[], str]]:
        if self._found is None:
            self._found = _mechanism()
            if self._found is None:
                raise ClipboardError(_missing_tool_message())
            self.name = f"pyperclip ({self._found[0]}, text only)"
        return self._found

    def copy(self, content: ClipboardContent) -> None:
        mechanism, copy, _paste = self._use()
        try:
            copy(content.text)
        except Exception as exc:
            raise ClipboardError(f"Copying to the clipboard failed ({exc}).") from None
        if mechanism in _FORKING:
            self._wait_until_owned(content.text)

    def _wait_until_owned(self, text: str) -> None:
        """xclip/xsel/wl-copy return before their background child owns the selection; wait for it, so
        that when copy() returns a paste anywhere gets the new text."""
        deadline = time.monotonic() + _OWNER_TIMEOUT
        while True:
            try:
                if self.paste().rstrip("\n") == text.rstrip("\n"):
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise ClipboardError("The clipboard did not take the text; another program may be holding "
                                     "it, so try the capture again.")
            time.sleep(0.01)

    def paste(self) -> str:
        _mechanism_name, _copy, paste = self._use()
        try:
            return paste() or ""
        except Exception as exc:
            raise ClipboardError(f"Reading the clipboard failed ({exc}).") from None
