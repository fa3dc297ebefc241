"""Run by the *Windows* Python under Wine (tests/wine.py starts it): asks the Win32 API what the Linux side
cannot see, and prints one JSON line. Wine stands in for the Windows API here, not for Windows.

    python.exe wine_probe.py clipboard            # CF_UNICODETEXT on the Windows clipboard, or null
    python.exe wine_probe.py windows              # visible top-level windows: [class, title, pid]
    python.exe wine_probe.py run-key              # the dotocr value under HKCU\\...\\Run, or null
    python.exe wine_probe.py hold-hotkey MODS VK  # RegisterHotKey and keep it until killed
"""

from __future__ import annotations

import ctypes
import json
import sys
import time
from ctypes import wintypes
from typing import Any

CF_UNICODETEXT = 13
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def _dlls() -> tuple[Any, Any]:
    user32 = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    user32.OpenClipboard.argtypes = [wintypes.HWND]
    user32.GetClipboardData.argtypes = [wintypes.UINT]
    user32.GetClipboardData.restype = wintypes.HANDLE
    kernel32.GlobalLock.argtypes = [wintypes.HGLOBAL]
    kernel32.GlobalLock.restype = ctypes.c_void_p
    kernel32.GlobalUnlock.argtypes = [wintypes.HGLOBAL]
    return user32, kernel32


def clipboard() -> str | None:
    """The clipboard's Unicode text through OpenClipboard/GetClipboardData, as any Windows program reads it."""
    user32, kernel32 = _dlls()
    for _ in range(100):  # another program may hold the clipboard open for a moment
        if user32.OpenClipboard(None):
            break
        time.sleep(0.02)
    else:
        raise OSError(ctypes.get_last_error(), "OpenClipboard failed")  # type: ignore[attr-defined]
    try:
        handle = user32.GetClipboardData(CF_UNICODETEXT)
        if not handle:
            return None
        pointer = kernel32.GlobalLock(handle)
        try:
            return ctypes.wstring_at(pointer)
        finally:
            kernel32.GlobalUnlock(handle)
    finally:
        user32.CloseClipboard()


def windows() -> list[list[Any]]:
    """[class name, title, process id] of every visible top-level window, in Z order."""
    user32, _ = _dlls()
    found: list[list[Any]] = []

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)  # type: ignore[attr-defined]
    def visit(hwnd: int, _param: int) -> bool:
        if user32.IsWindowVisible(hwnd):
            name = ctypes.create_unicode_buffer(256)
            title = ctypes.create_unicode_buffer(512)
            pid = wintypes.DWORD()
            user32.GetClassNameW(hwnd, name, 256)
            user32.GetWindowTextW(hwnd, title, 512)
            user32.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
            found.append([name.value, title.value, pid.value])
        return True

    user32.EnumWindows(visit, 0)
    return found


def run_key() -> str | None:
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            return winreg.QueryValueEx(key, "dotocr")[0]
    except FileNotFoundError:
        return None


def hold_hotkey(mods: int, vk: int) -> None:
    """Own a global hotkey the way another program would, until this process is killed."""
    user32, _ = _dlls()
    if not user32.RegisterHotKey(None, 1, mods, vk):
        print(json.dumps({"held": False, "error": ctypes.get_last_error()}), flush=True)  # type: ignore[attr-defined]
        return
    print(json.dumps({"held": True}), flush=True)
    message = wintypes.MSG()
    while user32.GetMessageW(ctypes.byref(message), None, 0, 0) > 0:
        pass


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "hold-hotkey":
        hold_hotkey(int(rest[0]), int(rest[1]))
        return 0
    answers = {"clipboard": clipboard, "windows": windows, "run-key": run_key}
    print(json.dumps(answers[command]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
