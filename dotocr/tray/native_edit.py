"""On Windows, the result window's text is a real RichEdit control, so a screen reader reads it.

Tk 8.6 draws its Text widget itself and exposes nothing to UI Automation or MSAA: Narrator and NVDA find an
unnamed pane. A RichEdit control (Msftedit.dll, in every Windows since XP) is a native edit control with its own
accessibility provider: a screen reader reads it, follows the caret and the selection, and announces edits.
It lives inside a Tk frame (a real HWND), sized with it. The keys Tk would have handled are caught in the
control's window procedure and queued; Tk's own timer takes them within `KEY_POLL_MS`: Tab and Shift+Tab move
Tk's focus, Esc is the window's Esc, Ctrl+C goes through the window's copy (the selection, or everything).
Nothing calls Tk from inside the window procedure: Tk dispatches it with the GIL released and its own state
saved, and a tkinter call there aborts Python ("PyEval_RestoreThread ... GIL is released", seen under Wine).
Low-confidence spans are underlined with RichEdit's own character format.

Everything runs on the Tk thread (Tk's message loop dispatches the control's messages). Where the control
cannot be made, `text_area.make_text_area` falls back on Tk's Text and logs why.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import tkinter as tk
from collections.abc import Callable, Sequence
from ctypes import wintypes
from typing import Any

log = logging.getLogger(__name__)

WS_CHILD, WS_VISIBLE, WS_VSCROLL, WS_TABSTOP = 0x40000000, 0x10000000, 0x00200000, 0x00010000
ES_MULTILINE, ES_AUTOVSCROLL, ES_NOHIDESEL, ES_WANTRETURN = 0x0004, 0x0040, 0x0100, 0x1000
WM_SETFONT, WM_SETTEXT, WM_GETTEXT, WM_GETTEXTLENGTH = 0x0030, 0x000C, 0x000D, 0x000E
WM_KEYDOWN, WM_CHAR, WM_COPY, WM_NCDESTROY = 0x0100, 0x0102, 0x0301, 0x0082
EM_SETSEL, EM_SCROLLCARET, EM_GETMODIFY, EM_SETMODIFY = 0x00B1, 0x00B7, 0x00B8, 0x00B9
EM_REPLACESEL, EM_EMPTYUNDOBUFFER, EM_SETREADONLY = 0x00C2, 0x00CD, 0x00CF
WM_USER = 0x0400
EM_EXGETSEL, EM_EXLIMITTEXT, EM_GETSELTEXT = WM_USER + 52, WM_USER + 53, WM_USER + 62
EM_GETCHARFORMAT, EM_SETCHARFORMAT = WM_USER + 58, WM_USER + 68
SCF_SELECTION = 0x0001
CFM_UNDERLINE, CFE_UNDERLINE, CFM_UNDERLINETYPE, CFU_UNDERLINE = 0x4, 0x4, 0x00800000, 1
VK_TAB, VK_ESCAPE, VK_SHIFT, VK_CONTROL = 0x09, 0x1B, 0x10, 0x11
GWLP_WNDPROC = -4
RICHEDIT_CLASS = "RICHEDIT50W"
KEY_POLL_MS = 30
MAX_TEXT = 16 * 1024 * 1024
"""RichEdit holds 32 K characters unless told otherwise; a long Markdown page needs more."""

LRESULT = ctypes.c_ssize_t
WNDPROC = ctypes.WINFUNCTYPE(LRESULT, wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM) \
    if hasattr(ctypes, "WINFUNCTYPE") else None


class CHARRANGE(ctypes.Structure):
    _fields_ = [("cpMin", wintypes.LONG), ("cpMax", wintypes.LONG)]


class CHARFORMAT2W(ctypes.Structure):
    _fields_ = [("cbSize", wintypes.UINT), ("dwMask", wintypes.DWORD), ("dwEffects", wintypes.DWORD),
                ("yHeight", wintypes.LONG), ("yOffset", wintypes.LONG), ("crTextColor", wintypes.DWORD),
                ("bCharSet", wintypes.BYTE), ("bPitchAndFamily", wintypes.BYTE), ("szFaceName", wintypes.WCHAR * 32),
                ("wWeight", wintypes.WORD), ("sSpacing", wintypes.SHORT), ("crBackColor", wintypes.DWORD),
                ("lcid", wintypes.DWORD), ("dwReserved", wintypes.DWORD), ("sStyle", wintypes.SHORT),
                ("wKerning", wintypes.WORD), ("bUnderlineType", wintypes.BYTE), ("bAnimation", wintypes.BYTE),
                ("bRevAuthor", wintypes.BYTE), ("bUnderlineColor", wintypes.BYTE)]


def rich_offset(text: str, offset: int) -> int:
    """A character offset in `text` as RichEdit counts it: UTF-16 units, a line break as one (it stores "\\r")."""
    return len(text[:offset].encode("utf-16-le")) // 2


def to_rich(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def from_rich(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _user32() -> Any:
    user32 = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    user32.CreateWindowExW.restype = wintypes.HWND
    user32.CreateWindowExW.argtypes = [wintypes.DWORD, wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD,
                                       ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, wintypes.HWND,
                                       wintypes.HMENU, wintypes.HINSTANCE, wintypes.LPVOID]
    user32.SendMessageW.restype = LRESULT
    user32.SendMessageW.argtypes = [wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
    user32.CallWindowProcW.restype = LRESULT
    user32.CallWindowProcW.argtypes = [ctypes.c_void_p, wintypes.HWND, wintypes.UINT, wintypes.WPARAM,
                                       wintypes.LPARAM]
    user32.SetWindowLongPtrW.restype = ctypes.c_void_p
    user32.SetWindowLongPtrW.argtypes = [wintypes.HWND, ctypes.c_int, ctypes.c_void_p]
    user32.MoveWindow.argtypes = [wintypes.HWND, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  wintypes.BOOL]
    user32.SetFocus.argtypes = [wintypes.HWND]
    user32.GetFocus.restype = wintypes.HWND
    user32.GetKeyState.restype = ctypes.c_short
    return user32


class NativeTextArea:
    """A RichEdit control in a Tk frame, with the `text_area.TextArea` interface."""

    def __init__(self, master: tk.Misc, *, font: Any, on_key: Callable[[Any], str | None] | None = None,
                 lines: int = 8, on_escape: Callable[[], None] | None = None) -> None:
        ctypes.WinDLL("Msftedit.dll")  # type: ignore[attr-defined]  # registers RICHEDIT50W; OSError if missing
        self._user32 = user32 = _user32()
        self._gdi32 = ctypes.WinDLL("gdi32")  # type: ignore[attr-defined]
        self._on_key = on_key
        self._on_escape = on_escape
        self.frame = tk.Frame(master, takefocus=1, background="white", highlightthickness=1,
                              height=lines * int(font.metrics("linespace")))
        self.frame.update_idletasks()
        parent = self.frame.winfo_id()
        if not parent:
            raise OSError("Tk's frame has no window to hold the control")
        style = WS_CHILD | WS_VISIBLE | WS_VSCROLL | WS_TABSTOP | ES_MULTILINE | ES_AUTOVSCROLL | ES_NOHIDESEL \
            | ES_WANTRETURN
        self.hwnd = user32.CreateWindowExW(0, RICHEDIT_CLASS, "", style, 0, 0, 10, 10, parent, None, None, None)
        if not self.hwnd:
            raise OSError(ctypes.get_last_error(), "CreateWindowExW(RICHEDIT50W) failed")
        self._send(EM_EXLIMITTEXT, 0, MAX_TEXT)
        self._font = self._gdi32.CreateFontW(font.cget("size"), 0, 0, 0, 400, 0, 0, 0, 1, 0, 0, 5, 0,
                                             font.actual("family"))
        self._send(WM_SETFONT, self._font, 1)
        self._proc = WNDPROC(self._window_proc)
        self._old_proc = user32.SetWindowLongPtrW(self.hwnd, GWLP_WNDPROC, ctypes.cast(self._proc, ctypes.c_void_p))
        self.frame.bind("<Configure>", lambda e: user32.MoveWindow(self.hwnd, 0, 0, e.width, e.height, True))
        self.frame.bind("<FocusIn>", lambda _e: user32.SetFocus(self.hwnd))
        self._keys: list[tuple[str, bool]] = []
        """Keys taken from the control for Tk, queued by the window procedure, run by `_take_keys`."""
        self._editable = True
        self.set_editable(False)
        self.frame.after(KEY_POLL_MS, self._take_keys)

    # -- the TextArea interface ------------------------------------------------------------------------------

    def append(self, text: str) -> None:
        with self._writable():
            self._send(EM_SETSEL, 0x7FFFFFFF, 0x7FFFFFFF)  # past the end: RichEdit puts the caret at the end
            self._send(EM_REPLACESEL, 0, ctypes.c_wchar_p(to_rich(text)))
            self._send(EM_SCROLLCARET, 0, 0)

    def set_text(self, text: str, low_confidence: Sequence[tuple[int, int]] = ()) -> None:
        with self._writable():
            self._send(WM_SETTEXT, 0, ctypes.c_wchar_p(to_rich(text)))
            for start, end in low_confidence:
                start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
                if start < end:
                    self._underline(rich_offset(text, start), rich_offset(text, end))
            self._send(EM_SETSEL, 0, 0)
        self._send(EM_EMPTYUNDOBUFFER, 0, 0)
        self._send(EM_SETMODIFY, 0, 0)

    def get_text(self) -> str:
        length = self._send(WM_GETTEXTLENGTH, 0, 0)
        buffer = ctypes.create_unicode_buffer(length + 1)
        self._send(WM_GETTEXT, length + 1, buffer)
        return from_rich(buffer.value)

    def selected_text(self) -> str:
        span = CHARRANGE()
        self._send(EM_EXGETSEL, 0, span)
        if span.cpMax <= span.cpMin:
            return ""
        buffer = ctypes.create_unicode_buffer(span.cpMax - span.cpMin + 1)
        self._send(EM_GETSELTEXT, 0, buffer)
        return from_rich(buffer.value)

    def set_editable(self, editable: bool) -> None:
        self._editable = editable
        self._send(EM_SETREADONLY, 0 if editable else 1, 0)

    def edited(self) -> bool:
        return self._editable and bool(self._send(EM_GETMODIFY, 0, 0))

    def focus(self) -> None:
        self.frame.focus_set()
        self._user32.SetFocus(self.hwnd)

    def underlined(self) -> list[tuple[int, int]]:
        """The underlined spans as offsets in `get_text()`, asked character by character (for tests)."""
        text = self.get_text()
        marks = []
        for index in range(len(text)):
            position = rich_offset(text, index)
            self._send(EM_SETSEL, position, rich_offset(text, index + 1))
            format_ = CHARFORMAT2W(cbSize=ctypes.sizeof(CHARFORMAT2W))
            self._send(EM_GETCHARFORMAT, SCF_SELECTION, format_)
            marks.append(bool(format_.dwEffects & CFE_UNDERLINE) and bool(format_.dwMask & CFM_UNDERLINE))
        self._send(EM_SETSEL, 0, 0)
        spans, start = [], None
        for index, marked in enumerate([*marks, False]):
            if marked and start is None:
                start = index
            elif not marked and start is not None:
                spans.append((start, index))
                start = None
        return spans

    # -- Win32 -----------------------------------------------------------------------------------------------

    def _send(self, message: int, wparam: int, lparam: Any) -> int:
        """SendMessageW; `lparam` may be a number, a structure (passed by address) or a string buffer."""
        value = lparam  # `lparam` keeps the buffer alive until the message returns
        if isinstance(lparam, ctypes.Structure):
            value = ctypes.addressof(lparam)
        elif not isinstance(lparam, int):
            value = ctypes.cast(lparam, ctypes.c_void_p).value or 0
        return int(self._user32.SendMessageW(self.hwnd, message, wparam, value))

    def _underline(self, start: int, end: int) -> None:
        self._send(EM_SETSEL, start, end)
        format_ = CHARFORMAT2W(cbSize=ctypes.sizeof(CHARFORMAT2W), dwMask=CFM_UNDERLINE | CFM_UNDERLINETYPE,
                               dwEffects=CFE_UNDERLINE, bUnderlineType=CFU_UNDERLINE)
        self._send(EM_SETCHARFORMAT, SCF_SELECTION, format_)

    def _writable(self) -> _Writable:
        return _Writable(self)

    def _window_proc(self, hwnd: int, message: int, wparam: int, lparam: int) -> int:
        """The control's messages: Tab, Esc and Ctrl+C are queued for Tk (see the module's docstring)."""
        try:
            if message == WM_KEYDOWN and wparam in (VK_TAB, VK_ESCAPE, ord("C")):
                if wparam == VK_TAB:
                    self._keys.append(("tab", self._user32.GetKeyState(VK_SHIFT) < 0))
                    return 0
                if wparam == VK_ESCAPE:
                    self._keys.append(("escape", False))
                    return 0
                if self._user32.GetKeyState(VK_CONTROL) < 0:
                    self._keys.append(("copy", False))
                    return 0
            if message == WM_CHAR and wparam in (0x09, 0x1B, 0x03):  # the characters of Tab, Esc and Ctrl+C
                return 0
            if message == WM_NCDESTROY:
                self._user32.SetWindowLongPtrW(hwnd, GWLP_WNDPROC, self._old_proc)
                self._gdi32.DeleteObject(self._font)
        except Exception:  # an exception must never cross into Windows' message dispatch
            log.exception("The RichEdit key handler failed")
        return int(self._user32.CallWindowProcW(self._old_proc, hwnd, message, wparam, lparam))

    def _take_keys(self) -> None:
        """Tk's timer: run the queued keys, on Tk's terms."""
        try:
            if not self.frame.winfo_exists():
                return
        except tk.TclError:
            return
        keys, self._keys = self._keys, []
        for key, shifted in keys:
            if key == "tab":
                self._move_focus(shifted)
            elif key == "escape" and self._on_escape is not None:
                self._on_escape()
            elif key == "copy":
                self._copy()
        with contextlib.suppress(tk.TclError):  # Esc closed the window
            self.frame.after(KEY_POLL_MS, self._take_keys)

    def _move_focus(self, backwards: bool) -> None:
        target = self.frame.tk_focusPrev() if backwards else self.frame.tk_focusNext()
        if target is not None:
            target.focus_force()  # Tk did not know it had the keyboard: the control had it

    def _copy(self) -> None:
        handled = self._on_key(None) if self._on_key is not None else None
        if handled is None:
            self._send(WM_COPY, 0, 0)  # while reading: the control's own copy of the selection


class _Writable:
    """Lets the program write into the read-only control; what the program writes is no edit."""

    def __init__(self, area: NativeTextArea) -> None:
        self.area = area

    def __enter__(self) -> None:
        self._was = self.area._editable
        self.area._send(EM_SETREADONLY, 0, 0)

    def __exit__(self, *exc: object) -> None:
        if not self._was:
            self.area._send(EM_SETREADONLY, 1, 0)
