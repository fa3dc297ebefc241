"""The Windows clipboard with text and HTML at once, through the Win32 API (ctypes): CF_UNICODETEXT and CF_HTML.

CF_HTML ("HTML Format") is UTF-8 with a header of byte offsets to the document and the fragment
(learn.microsoft.com: "HTML Clipboard Format"); `cf_html` builds it and is plain Python, tested everywhere. The
clipboard is opened for a message-only window of our own (EmptyClipboard with no owner window makes
SetClipboardData fail, says EmptyClipboard's documentation; pyperclip does the same), with a few retries (another
program may hold it for a moment), emptied, filled with both formats, and closed; the system then owns the data,
so it outlives the window and our process.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .base import ClipboardContent, ClipboardError

CF_UNICODETEXT = 13
GMEM_MOVEABLE = 0x0002
HWND_MESSAGE = -3
OPEN_TRIES = 10
OPEN_PAUSE_S = 0.02

_HEADER = ("Version:0.9\r\nStartHTML:{:010d}\r\nEndHTML:{:010d}\r\nStartFragment:{:010d}\r\n"
           "EndFragment:{:010d}\r\n")
_BEFORE = '<html><head><meta charset="utf-8"></head><body>\r\n<!--StartFragment-->'
_AFTER = "<!--EndFragment-->\r\n</body></html>"


def cf_html(fragment: str) -> bytes:
    """`fragment` as CF_HTML: the header's offsets count UTF-8 bytes from the start of the header."""
    header_length = len(_HEADER.format(0, 0, 0, 0))
    before, body, after = (part.encode("utf-8") for part in (_BEFORE, fragment, _AFTER))
    start_html = header_length
    start_fragment = start_html + len(before)
    end_fragment = start_fragment + len(body)
    end_html = end_fragment + len(after)
    header = _HEADER.format(start_html, end_html, start_fragment, end_fragment).encode("ascii")
    return header + before + body + after


class WindowsClipboard:
    name = "Windows clipboard (text and HTML)"
    carries_html = True
    install_hint = ""

    @staticmethod
    def is_compatible() -> bool:
        return sys.platform == "win32"

    @staticmethod
    def is_installed() -> bool:
        return True  # ctypes and user32 are part of every Windows Python

    def copy(self, content: ClipboardContent) -> None:
        api = _Win32()
        formats = [(CF_UNICODETEXT, content.text.encode("utf-16-le") + b"\0\0")]
        if content.html is not None:
            formats.append((api.html_format(), cf_html(content.html) + b"\0"))
        api.open()
        try:
            if not api.user32.EmptyClipboard():
                raise ClipboardError("Windows refused to empty the clipboard; try the capture again.")
            for kind, data in formats:
                api.put(kind, data)
        finally:
            api.close()

    def paste(self) -> str:
        api = _Win32()
        api.open()
        try:
            handle = api.user32.GetClipboardData(CF_UNICODETEXT)
            if not handle:
                return ""
            pointer = api.kernel32.GlobalLock(handle)
            if not pointer:
                return ""
            try:
                import ctypes

                return ctypes.wstring_at(pointer)
            finally:
                api.kernel32.GlobalUnlock(handle)
        finally:
            api.close()


class _Win32:
    """The few user32 and kernel32 calls, with their argument types (handles are pointers on 64-bit Windows)."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self.ctypes = ctypes
        self.window: Any = None
        self.user32: Any = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
        self.kernel32: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        u, k = self.user32, self.kernel32
        u.CreateWindowExW.argtypes = [wintypes.DWORD, wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD,
                                      ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, wintypes.HWND,
                                      wintypes.HMENU, wintypes.HINSTANCE, wintypes.LPVOID]
        u.CreateWindowExW.restype = wintypes.HWND
        u.DestroyWindow.argtypes, u.DestroyWindow.restype = [wintypes.HWND], wintypes.BOOL
        u.OpenClipboard.argtypes, u.OpenClipboard.restype = [wintypes.HWND], wintypes.BOOL
        u.CloseClipboard.argtypes, u.CloseClipboard.restype = [], wintypes.BOOL
        u.EmptyClipboard.argtypes, u.EmptyClipboard.restype = [], wintypes.BOOL
        u.SetClipboardData.argtypes, u.SetClipboardData.restype = [wintypes.UINT, wintypes.HANDLE], wintypes.HANDLE
        u.GetClipboardData.argtypes, u.GetClipboardData.restype = [wintypes.UINT], wintypes.HANDLE
        u.RegisterClipboardFormatW.argtypes, u.RegisterClipboardFormatW.restype = [wintypes.LPCWSTR], wintypes.UINT
        k.GlobalAlloc.argtypes, k.GlobalAlloc.restype = [wintypes.UINT, ctypes.c_size_t], wintypes.HGLOBAL
        k.GlobalLock.argtypes, k.GlobalLock.restype = [wintypes.HGLOBAL], wintypes.LPVOID
        k.GlobalUnlock.argtypes, k.GlobalUnlock.restype = [wintypes.HGLOBAL], wintypes.BOOL
        k.GlobalFree.argtypes, k.GlobalFree.restype = [wintypes.HGLOBAL], wintypes.HGLOBAL

    def html_format(self) -> int:
        kind = self.user32.RegisterClipboardFormatW("HTML Format")
        if not kind:
            raise ClipboardError("Windows has no HTML clipboard format here.")
        return kind

    def open(self) -> None:
        """Open the clipboard for a message-only window made here (destroyed again by `close`)."""
        self.window = self.user32.CreateWindowExW(0, "STATIC", None, 0, 0, 0, 0, 0, HWND_MESSAGE, None, None, None)
        for _ in range(OPEN_TRIES):
            if self.user32.OpenClipboard(self.window):
                return
            time.sleep(OPEN_PAUSE_S)
        self.user32.DestroyWindow(self.window)
        raise ClipboardError("Another program is holding the clipboard; try the capture again.")

    def close(self) -> None:
        self.user32.CloseClipboard()
        if self.window:
            self.user32.DestroyWindow(self.window)

    def put(self, kind: int, data: bytes) -> None:
        """Hand `data` to the clipboard as format `kind`; the system owns the memory once it accepts it."""
        handle = self.kernel32.GlobalAlloc(GMEM_MOVEABLE, len(data))
        if not handle:
            raise ClipboardError("Windows had no memory for the clipboard.")
        pointer = self.kernel32.GlobalLock(handle)
        if not pointer:
            self.kernel32.GlobalFree(handle)
            raise ClipboardError("Windows had no memory for the clipboard.")
        self.ctypes.memmove(pointer, data, len(data))
        self.kernel32.GlobalUnlock(handle)
        if not self.user32.SetClipboardData(kind, handle):
            self.kernel32.GlobalFree(handle)
            raise ClipboardError(f"Windows refused the clipboard data (error {self.ctypes.get_last_error()}).")
