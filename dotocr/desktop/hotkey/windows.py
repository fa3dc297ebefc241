"""Windows global hotkey: RegisterHotKey on a dedicated thread that runs its own message loop.

RegisterHotKey binds the hotkey to the calling thread's message queue, so registration, the
GetMessageW loop and UnregisterHotKey all happen on one thread we own; other threads only post
WM_QUIT to it.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from .base import Hotkey, HotkeyError, guarded, taken_message

log = logging.getLogger(__name__)

MOD_ALT, MOD_CONTROL, MOD_SHIFT, MOD_WIN, MOD_NOREPEAT = 0x0001, 0x0002, 0x0004, 0x0008, 0x4000
WM_QUIT, WM_HOTKEY, WM_USER = 0x0012, 0x0312, 0x0400
PM_NOREMOVE = 0x0000
ERROR_HOTKEY_ALREADY_REGISTERED = 1409
HOTKEY_ID = 0x0D07

_MODIFIER_FLAGS = {"ctrl": MOD_CONTROL, "alt": MOD_ALT, "shift": MOD_SHIFT, "win": MOD_WIN}
_NAMED_VK = {
    "space": 0x20, "tab": 0x09, "enter": 0x0D, "esc": 0x1B, "backspace": 0x08, "insert": 0x2D,
    "delete": 0x2E, "home": 0x24, "end": 0x23, "page_up": 0x21, "page_down": 0x22, "left": 0x25,
    "up": 0x26, "right": 0x27, "down": 0x28, "print_screen": 0x2C, "pause": 0x13,
}


def virtual_key(hotkey: Hotkey) -> tuple[int, int]:
    """(modifier flags including MOD_NOREPEAT, virtual-key code) for RegisterHotKey."""
    mods = MOD_NOREPEAT
    for name in hotkey.modifiers:
        mods |= _MODIFIER_FLAGS[name]
    key = hotkey.key
    if hotkey.is_function_key:
        vk = 0x70 + int(key[1:]) - 1  # VK_F1 .. VK_F24
    elif key in _NAMED_VK:
        vk = _NAMED_VK[key]
    else:
        vk = ord(key.upper())  # VK codes of A-Z and 0-9 are their ASCII upper-case codes
    return mods, vk


def _load_win32() -> tuple[Any, Any, Callable[[], int]]:
    from ctypes import wintypes

    user32 = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    lpmsg = ctypes.POINTER(wintypes.MSG)
    user32.RegisterHotKey.argtypes = [wintypes.HWND, ctypes.c_int, wintypes.UINT, wintypes.UINT]
    user32.RegisterHotKey.restype = wintypes.BOOL
    user32.UnregisterHotKey.argtypes = [wintypes.HWND, ctypes.c_int]
    user32.UnregisterHotKey.restype = wintypes.BOOL
    user32.GetMessageW.argtypes = [lpmsg, wintypes.HWND, wintypes.UINT, wintypes.UINT]
    user32.GetMessageW.restype = wintypes.BOOL
    user32.PeekMessageW.argtypes = [lpmsg, wintypes.HWND, wintypes.UINT, wintypes.UINT, wintypes.UINT]
    user32.PeekMessageW.restype = wintypes.BOOL
    user32.PostThreadMessageW.argtypes = [wintypes.DWORD, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
    user32.PostThreadMessageW.restype = wintypes.BOOL
    kernel32.GetCurrentThreadId.restype = wintypes.DWORD
    return user32, kernel32, ctypes.get_last_error  # type: ignore[attr-defined]


class WindowsHotkeys:
    """RegisterHotKey backend; user32, kernel32 and last_error are injectable so tests can fake Win32."""

    name = "windows (RegisterHotKey)"

    def __init__(self, user32: Any = None, kernel32: Any = None,
                 last_error: Callable[[], int] | None = None) -> None:
        self._win32 = (user32, kernel32, last_error) if user32 is not None else None
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None

    @staticmethod
    def is_compatible() -> bool:
        return sys.platform == "win32"

    def register(self, hotkey: Hotkey, callback: Callable[[], None]) -> None:
        """Start the hotkey thread and wait until RegisterHotKey has answered; HotkeyError if it failed."""
        self.unregister()
        if self._win32 is None:
            self._win32 = _load_win32()
        mods, vk = virtual_key(hotkey)
        outcome: dict[str, Any] = {}
        answered = threading.Event()
        thread = threading.Thread(target=self._loop, args=(mods, vk, guarded(callback), outcome, answered),
                                  name="dotocr-hotkey", daemon=True)
        thread.start()
        if not answered.wait(5.0):
            raise HotkeyError(f"Registering the hotkey {hotkey} did not finish; try again or choose another "
                              "combination with --hotkey.")
        if "error" in outcome:
            thread.join(1.0)
            code = outcome["error"]
            if code == ERROR_HOTKEY_ALREADY_REGISTERED:
                raise HotkeyError(taken_message(hotkey))
            raise HotkeyError(f"Windows refused the hotkey {hotkey} (error {code}); choose another "
                              "combination with --hotkey or the hotkey setting in the settings file.")
        self._thread, self._thread_id = thread, outcome["thread_id"]

    def _loop(self, mods: int, vk: int, callback: Callable[[], None], outcome: dict[str, Any],
              answered: threading.Event) -> None:
        from ctypes import wintypes

        user32, kernel32, last_error = self._win32  # type: ignore[misc]
        msg = wintypes.MSG()
        # Make sure this thread has a message queue before anyone posts WM_QUIT to it.
        user32.PeekMessageW(ctypes.byref(msg), None, WM_USER, WM_USER, PM_NOREMOVE)
        if not user32.RegisterHotKey(None, HOTKEY_ID, mods, vk):
            outcome["error"] = last_error()
            answered.set()
            return
        outcome["thread_id"] = kernel32.GetCurrentThreadId()
        answered.set()
        try:
            while user32.GetMessageW(ctypes.byref(msg), None, 0, 0) > 0:
                if msg.message == WM_HOTKEY and msg.wParam == HOTKEY_ID:
                    callback()
        finally:
            user32.UnregisterHotKey(None, HOTKEY_ID)

    def unregister(self) -> None:
        """Ask the hotkey thread to quit; it unregisters the hotkey itself, as Windows requires."""
        thread, thread_id = self._thread, self._thread_id
        self._thread = self._thread_id = None
        if thread is None or self._win32 is None:
            return
        user32 = self._win32[0]
        if not user32.PostThreadMessageW(thread_id, WM_QUIT, 0, 0):
            log.warning("Could not stop the hotkey thread; the hotkey stays registered until dotocr exits.")
            return
        if thread is not threading.current_thread():
            thread.join(2.0)
