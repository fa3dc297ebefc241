"""The result window's native RichEdit control, on Windows (Windows Python; in CI under Wine, which implements
RichEdit in riched20.dll and the keyboard through its own message queue).

Checked through the control itself (its messages), not through Tk: the text streamed in and then replaced, line
breaks and characters beyond the BMP, the wavy-underlined spans, read-only while reading and editable after,
"edited" only after a person's change, and the keys Tk must still see (Tab, Esc, Ctrl+C) taken from the control.
What a screen reader then says cannot be checked here (docs/tray.md).
"""

from __future__ import annotations

import sys
import time
import tkinter as tk

import pytest

pytestmark = [pytest.mark.skipif(sys.platform != "win32", reason="the native control exists on Windows only"),
              pytest.mark.timeout(60)]


def pump(root: tk.Tk, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        root.update()
        time.sleep(0.005)


def press(root: tk.Tk, *keys: int) -> None:
    """Key presses as Windows delivers them to the focused control (keybd_event), modifiers first."""
    import ctypes

    user32 = ctypes.windll.user32
    for key in keys:
        user32.keybd_event(key, 0, 0, 0)
    for key in reversed(keys):
        user32.keybd_event(key, 0, 2, 0)  # KEYEVENTF_KEYUP
    pump(root, 0.3)


@pytest.fixture
def root():
    root = tk.Tk()
    root.withdraw()
    if not root.winfo_id():
        root.destroy()
        pytest.skip("Tk made no window: Wine without an X display draws nothing (real Windows always has a desktop)")
    yield root
    root.destroy()


def test_the_result_window_on_windows_is_a_richedit_control(root):
    from dotocr.capture import Rect
    from dotocr.tray.native_edit import NativeTextArea
    from dotocr.tray.reading import Reading
    from dotocr.tray.result_window import ResultWindow

    cancelled: list[int] = []
    copied: list[str] = []
    reading = Reading(Rect(100, 100, 1, 1))
    window = ResultWindow(root, reading, lambda: cancelled.append(1))
    try:
        area = window.area
        assert isinstance(area, NativeTextArea), "the native control could not be made; see the log"
        pump(root, 0.3)
        reading.on_text("Hello\nwor")
        reading.should_stop()
        pump(root, 0.2)
        assert area.get_text() == "Hello\nwor"
        area._send(0x0102, ord("x"), 0)  # WM_CHAR: typing while reading changes nothing
        assert area.get_text() == "Hello\nwor" and not area.edited()

        answer = "a\U0001F600 bc\nd\u00e9f ghi"
        window.finish(answer, status="Copied", copy_choices=[("Copy", copied.append)],
                      low_confidence=[(1, 2), (7, 10), (50, 60)])
        pump(root, 0.3)
        assert area.get_text() == answer
        assert area.underlined() == [(1, 2), (7, 10)]
        assert not area.edited()

        area.focus()
        pump(root, 0.2)
        press(root, 0x11, 0x23)  # Ctrl+End
        press(root, 0x5A)  # "z"
        assert area.get_text().endswith("ghiz") and area.edited()
        press(root, 0x11, 0x43)  # Ctrl+C with nothing selected: everything, through the plain copy choice
        assert copied == [answer + "z"]
        press(root, 0x09)  # Tab: Tk's focus moves on, to the Copy button
        focused = root.focus_get()
        assert focused is not None and focused.winfo_class() == "TButton" and focused.cget("text") == "Copy"
        area.focus()
        pump(root, 0.2)
        press(root, 0x1B)  # Esc: the window's Esc (after the read: close)
        assert not window.is_open and cancelled == []
    finally:
        window.close()

    reading = Reading(Rect(100, 100, 1, 1))
    window = ResultWindow(root, reading, lambda: cancelled.append(1))
    try:
        pump(root, 0.3)
        window.area.focus()
        pump(root, 0.2)
        press(root, 0x1B)  # Esc in the control while reading: the read is stopped and the window goes
        assert cancelled == [1] and not window.is_open
    finally:
        window.close()
