"""Global hotkey: parse a combination and register it with the first backend that suits this desktop."""

from __future__ import annotations

from .base import Hotkey, HotkeyBackend, HotkeyError, parse_hotkey
from .windows import WindowsHotkeys
from .x11 import X11Hotkeys

BACKENDS: tuple[type, ...] = (WindowsHotkeys, X11Hotkeys)

__all__ = ["BACKENDS", "Hotkey", "HotkeyBackend", "HotkeyError", "get_hotkey_backend", "parse_hotkey"]


def get_hotkey_backend() -> HotkeyBackend:
    """A fresh instance of the first compatible backend; HotkeyError saying what to do where none is."""
    for backend in BACKENDS:
        if backend.is_compatible():
            return backend()
    raise HotkeyError("This desktop offers no global hotkey dotocr can use (it needs Windows or an X11 "
                      "session); bind a desktop shortcut to `dotocr-tray --capture` instead.")
