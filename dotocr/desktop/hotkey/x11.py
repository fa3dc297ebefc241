"""X11 global hotkey through pynput's GlobalHotKeys (XRecord), with an XGrabKey probe for conflicts.

pynput only listens, so it cannot tell whether another program (often the desktop's own shortcut
daemon) has grabbed the same combination. Before listening we try to grab the key on the root
window for a moment: X answers BadAccess when another client holds it, which becomes a HotkeyError.
The grab is released at once, so the key press still reaches the focused window as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from .base import Hotkey, HotkeyError, guarded, taken_message

log = logging.getLogger(__name__)

_X_KEYSYMS = {
    "space": "space", "tab": "Tab", "enter": "Return", "esc": "Escape", "backspace": "BackSpace",
    "insert": "Insert", "delete": "Delete", "home": "Home", "end": "End", "page_up": "Prior",
    "page_down": "Next", "up": "Up", "down": "Down", "left": "Left", "right": "Right",
    "print_screen": "Print", "pause": "Pause",
}


def pynput_hotkey(hotkey: Hotkey) -> str:
    """The combination in pynput's HotKey.parse syntax, e.g. "<ctrl>+<alt>+<shift>+o"."""
    names = {"ctrl": "<ctrl>", "alt": "<alt>", "shift": "<shift>", "win": "<cmd>"}
    parts = [names[m] for m in ("ctrl", "alt", "shift", "win") if m in hotkey.modifiers]
    key = hotkey.key
    parts.append(key if len(key) == 1 else f"<{key}>")
    return "+".join(parts)


class X11Hotkeys:
    """pynput GlobalHotKeys listener; one hotkey at a time."""

    name = "x11 (pynput)"

    def __init__(self) -> None:
        self._listener: Any = None

    @staticmethod
    def is_compatible() -> bool:
        if sys.platform in ("win32", "darwin") or not os.environ.get("DISPLAY"):
            return False
        if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland":
            return False  # XRecord would only see key presses in XWayland windows
        try:
            from pynput import keyboard
        except Exception:  # pynput raises ImportError, or worse, when it cannot reach the X server
            return False
        return keyboard.Listener.__module__.endswith("_xorg")

    def register(self, hotkey: Hotkey, callback: Callable[[], None]) -> None:
        self.unregister()
        _check_not_grabbed(hotkey)
        from pynput import keyboard

        try:
            listener = keyboard.GlobalHotKeys({pynput_hotkey(hotkey): guarded(callback)})
        except ValueError:
            raise HotkeyError(f"The hotkey {hotkey} cannot be listened for on X11; choose another "
                              "combination with --hotkey or the hotkey setting in the settings file."
                              ) from None
        listener.daemon = True
        listener.start()
        listener.wait()
        self._listener = listener

    def unregister(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _stop_listener(listener)


def _stop_listener(listener: Any) -> None:
    """Stop a pynput X11 listener and wait for its thread.

    pynput 1.8 sends the RECORD disable request on the very connection its thread is blocked reading,
    so the thread (and its two X connections) would linger until the next key press. Sending the
    same request on the listener's other connection ends it at once; if pynput's internals differ,
    we fall back to its own stop and a bounded wait.
    """
    listener.stop()
    display, context = getattr(listener, "_display_stop", None), getattr(listener, "_context", None)
    if display is not None and context is not None:
        with contextlib.suppress(Exception):  # the thread may have closed the connection already
            display.record_disable_context(context)
            display.flush()
    listener.join(2.0)


def _check_not_grabbed(hotkey: Hotkey) -> None:
    """Raise HotkeyError if another X client holds a grab on exactly this combination."""
    from Xlib import XK, X, display, error

    masks = {"ctrl": X.ControlMask, "alt": X.Mod1Mask, "shift": X.ShiftMask, "win": X.Mod4Mask}
    modmask = 0
    for name in hotkey.modifiers:
        modmask |= masks[name]
    keysym_name = _X_KEYSYMS.get(hotkey.key) or (hotkey.key.upper() if hotkey.is_function_key else hotkey.key)
    try:
        conn = display.Display()
    except Exception as exc:
        raise HotkeyError(f"Cannot reach the X display {os.environ.get('DISPLAY')!r} to register the hotkey "
                          f"({exc}); start dotocr-tray inside your desktop session.") from None
    try:
        keycode = conn.keysym_to_keycode(XK.string_to_keysym(keysym_name))
        if not keycode:
            raise HotkeyError(f"The key {hotkey.key!r} of the hotkey {hotkey} is not on this keyboard "
                              "layout; choose another combination with --hotkey.")
        root = conn.screen().root
        catcher = error.CatchError(error.BadAccess)
        root.grab_key(keycode, modmask, False, X.GrabModeAsync, X.GrabModeAsync, onerror=catcher)
        conn.sync()
        if catcher.get_error():
            raise HotkeyError(taken_message(hotkey))
        root.ungrab_key(keycode, modmask)
        conn.sync()
    finally:
        conn.close()
