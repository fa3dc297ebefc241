"""The result window alone on a real X server: real Tk widgets, real keys and pointer through xdotool.

No engine here: a `Reading` is fed as the engine feeds it (its `on_text` and `should_stop` hooks), so each
behaviour is checked on its own. The window with the real tray and engine runs in test_tray_reading_e2e.py.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Iterator
from tkinter import ttk

import pytest

from dotocr.capture import Monitor, Rect, Region
from dotocr.tray import result_window
from dotocr.tray.reading import Reading
from dotocr.tray.result_display import CopyError
from dotocr.tray.result_window import ResultWindow
from tests.capture_helpers import pump, pump_until, xdotool_async
from tests.xvfb import needs_xdotool, needs_xvfb, shared_xvfb, using_display

pytestmark = [needs_xvfb, needs_xdotool, pytest.mark.x11, pytest.mark.timeout(60)]

SINGLE = (1000, 700)  # sizes no other test module uses: these X servers live as long as the test process
DUAL = [(0, 0, 900, 640), (900, 0, 700, 500)]


@pytest.fixture(scope="module")
def root() -> Iterator[tk.Tk]:
    with using_display(shared_xvfb(*SINGLE)):
        root = tk.Tk()
        root.withdraw()
        yield root
        root.destroy()


@pytest.fixture(scope="module")
def dual_root() -> Iterator[tk.Tk]:
    with using_display(shared_xvfb(monitors=DUAL)):
        root = tk.Tk()
        root.withdraw()
        yield root
        root.destroy()


def keys(root: tk.Tk, *words: str) -> None:
    """xdotool while the Tk loop turns (the window must see the events as they come)."""
    process = xdotool_async(*words)
    pump_until(root, lambda: process.poll() is not None, timeout=10)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    pump(root, 0.1)


class Cancels:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def region(x: int = 100, y: int = 80, width: int = 300, height: int = 120,
           monitor: Monitor = Monitor(0, 0, 0, *SINGLE)) -> Region:
    return Region(monitor, x, y, width, height)


@pytest.fixture
def opened(root) -> Iterator[Callable[..., tuple[ResultWindow, Reading, Cancels]]]:
    made: list[ResultWindow] = []

    def make(anchor=None, **options) -> tuple[ResultWindow, Reading, Cancels]:
        keys(root, "mousemove", "990", "690")  # the pointer away from where windows open
        reading, cancels = Reading(anchor if anchor is not None else region()), Cancels()
        window = ResultWindow(root, reading, cancels, **options)
        made.append(window)
        pump_until(root, lambda: bool(window.window.winfo_viewable()), timeout=5)
        pump(root, 0.1)
        return window, reading, cancels

    yield make
    for window in made:
        window.close()
    pump(root, 0.05)


def test_the_text_streams_in_with_time_tokens_and_speed(root, opened):
    window, reading, _ = opened()
    assert window.status.cget("text").startswith("Reading the picture\u2026")
    for piece in ("Hello", " wor", "ld"):
        reading.on_text(piece)
        reading.should_stop()
        pump(root, 0.08)
    assert window.area.get_text() == "Hello world"
    status = window.status.cget("text")
    assert status.startswith("Writing\u2026") and "3 tokens" in status and "tokens/s" in status, status
    window.area.text.insert("end", "typed")  # read-only while reading: a keystroke cannot change the stream
    assert window.area.get_text() == "Hello world"


def test_the_finished_text_is_editable_and_its_low_confidence_spans_underlined(root, opened):
    window, reading, _ = opened()
    reading.on_text('{"raw": "layout cells"}')  # what streams may differ from the formatted answer
    pump(root, 0.1)
    answer = "a\U0001F600 bc d\u00e9f\nsecond line"
    window.finish(answer, status="Copied", copy_choices=[("Copy", lambda _t: None)],
                  low_confidence=[(1, 2), (5, 7), (100, 200)])
    assert window.area.get_text() == answer
    assert window.area.underlined() == [(1, 2), (5, 7)]  # past the astral character, Tk's count matches ours
    assert not window.area.edited()
    pump(root, 0.05)
    assert window.legend.winfo_ismapped() and "unsure" in window.legend.cget("text")
    assert window.legend.winfo_y() > window.area.frame.winfo_y()  # under the text, above the buttons
    assert window.legend.winfo_y() < window.buttons.winfo_y()
    window.area.text.insert("end", "!")
    assert window.area.edited() and window.area.get_text() == answer + "!"


@pytest.mark.parametrize("spans", [[], [(50, 60)]])
def test_no_legend_when_nothing_is_underlined(root, opened, spans):
    window, _, _ = opened()
    window.finish("all sure", status="Copied", copy_choices=[("Copy", lambda _t: None)], low_confidence=spans)
    pump(root, 0.05)
    assert window.area.underlined() == [] and not window.legend.winfo_ismapped()


def test_keyboard_only_ctrl_c_tab_enter_and_esc(root, opened):
    copied: list[tuple[str, str]] = []
    window, _, _ = opened()
    window.finish("first line\nsecond line", status="Copied",
                  copy_choices=[("Copy", lambda t: copied.append(("plain", t))),
                                ("Copy as Markdown", lambda t: copied.append(("markdown", t)))])
    pump(root, 0.1)
    assert root.focus_get() is window.area.text  # the text has the keyboard once the read is done
    keys(root, "key", "ctrl+c")  # nothing selected: all of it, through the first (plain) choice
    assert copied[-1] == ("plain", "first line\nsecond line")
    keys(root, "key", "ctrl+a", "key", "Right", "type", " edited")  # ctrl+a selects all; then an edit at the end
    keys(root, "key", "shift+Home")  # select the last line
    keys(root, "key", "ctrl+c")
    assert copied[-1] == ("plain", "second line edited")
    keys(root, "key", "Tab")
    assert root.focus_get().cget("text") == "Copy"
    keys(root, "key", "Tab")
    assert root.focus_get().cget("text") == "Copy as Markdown"
    keys(root, "key", "Return")  # the choice gets the text as edited
    assert copied[-1] == ("markdown", "first line\nsecond line edited")
    assert "again" in window.status.cget("text")
    keys(root, "key", "Tab")
    assert root.focus_get() is window.close_button
    keys(root, "key", "shift+Tab")
    assert root.focus_get().cget("text") == "Copy as Markdown"
    keys(root, "key", "Escape")  # after the read, Esc closes; nothing is cancelled
    assert not window.is_open


def test_several_copy_choices_get_a_row_of_their_own_and_none_is_squeezed(root, opened):
    """Copy, Copy as Markdown and Copy as table side by side with Close did not fit the window's width: the
    third was cut to a sliver (seen in a screenshot)."""
    window, _, _ = opened()
    labels = ["Copy", "Copy as Markdown", "Copy as table"]
    window.finish("a\tb\n1\t2", status="Copied", copy_choices=[(label, lambda _t: None) for label in labels])
    pump(root, 0.2)
    buttons = [child for frame in window.buttons.master.winfo_children() if isinstance(frame, ttk.Frame)
               for child in frame.winfo_children() if isinstance(child, ttk.Button)]
    assert sorted(b.cget("text") for b in buttons) == sorted([*labels, "Close"])
    for button in buttons:
        assert button.winfo_width() >= button.winfo_reqwidth(), button.cget("text")
        assert button.winfo_rootx() + button.winfo_width() <= window.window.winfo_rootx() + window.window.winfo_width()


def test_esc_cancel_or_the_close_box_during_a_read_stop_it_and_close(root, opened):
    window, reading, cancels = opened()
    reading.on_text("partial")
    keys(root, "key", "Escape")
    assert cancels.count == 1 and not window.is_open
    window, _, cancels = opened()
    window.close_button.invoke()
    assert cancels.count == 1 and not window.is_open
    window, _, cancels = opened()
    root.tk.call(window.window.protocol("WM_DELETE_WINDOW"))  # what the close box of the window manager runs
    assert cancels.count == 1 and not window.is_open


def test_a_finished_window_closes_by_itself_unless_the_pointer_is_over_it_or_it_was_edited(root, opened):
    window, _, _ = opened(auto_close_s=0.6)
    window.finish("text", status="Copied", copy_choices=[("Copy", lambda _t: None)])
    pump(root, 0.3)
    assert window.countdown.cget("text") == "Closes in 1 s"
    pump_until(root, lambda: not window.is_open, timeout=3)

    hovered, _, _ = opened(auto_close_s=0.6)
    hovered.finish("text", status="Copied", copy_choices=[("Copy", lambda _t: None)])
    placed = hovered.placed
    keys(root, "mousemove", str(placed.left + 40), str(placed.top + 40))
    pump(root, 1.2)
    assert hovered.is_open and hovered.countdown.cget("text") == ""
    keys(root, "mousemove", "990", "690")
    pump_until(root, lambda: not hovered.is_open, timeout=3)

    edited, _, _ = opened(auto_close_s=0.6)
    edited.finish("text", status="Copied", copy_choices=[("Copy", lambda _t: None)])
    keys(root, "type", "more")
    pump(root, 1.2)
    assert edited.is_open and edited.area.get_text().endswith("more")


def test_a_problem_stays_until_closed_and_a_failed_copy_says_why(root, opened):
    window, reading, _ = opened(auto_close_s=0.3)
    reading.on_text("half an ans")
    window.finish(None, status="The model ran out of memory.", problem=True)
    pump(root, 0.8)
    assert window.is_open and window.area.get_text() == "half an ans"
    assert window.status.cget("text") == "The model ran out of memory."

    def failing(_text: str) -> None:
        raise CopyError("xclip is not installed.")

    copy, _, _ = opened()
    copy.finish("text", status="Not copied", problem=True, copy_choices=[("Copy", failing)])
    assert copy.copy() is False
    assert copy.status.cget("text") == "Not copied: xclip is not installed."


def test_placed_below_the_selection_and_kept_on_screen_at_the_edges(root, opened):
    window, _, _ = opened(region(100, 80, 300, 120))
    x, y = window.window.winfo_rootx(), window.window.winfo_rooty()
    assert (x, y) == (window.placed.left, window.placed.top) == (100, 80 + 120 + 10 + 34)
    corner, _, _ = opened(region(900, 640, 90, 50))  # the bottom-right corner: above it, pulled left
    placed = corner.placed
    assert placed.right <= SINGLE[0] - 8 and placed.bottom <= SINGLE[1] - 8
    assert placed.bottom <= 640  # above the selection, not over it


def test_on_the_second_monitor_beside_the_selection_and_at_the_pointer(dual_root):
    second = Monitor(1, 900, 0, 700, 500)
    reading = Reading(Region(second, 500, 420, 150, 60))  # near the second monitor's bottom-right
    window = ResultWindow(dual_root, reading, Cancels(), monitors=lambda: [Monitor(0, 0, 0, 900, 640), second])
    try:
        placed = window.placed
        assert placed.left >= 900 and placed.right <= 1600 and placed.bottom <= 500, placed
        assert placed.bottom <= 420  # above the selection
    finally:
        window.close()
    pointer = ResultWindow(dual_root, Reading(Rect(1500, 100, 1, 1)), Cancels(),
                           monitors=lambda: [Monitor(0, 0, 0, 900, 640), second])
    try:
        assert pointer.placed.left >= 900 and pointer.placed.right <= 1600, pointer.placed
    finally:
        pointer.close()
    pump(dual_root, 0.05)


def test_fonts_and_size_follow_the_monitors_scaling(root, opened, monkeypatch):
    normal, _, _ = opened()
    monkeypatch.setattr(result_window, "monitor_dpi", lambda _monitor: 192.0)  # 200 %, as Xft.dpi says
    scaled, _, _ = opened(region(100, 60, 200, 40))
    assert scaled.scale == 2.0
    assert scaled.text_font.cget("size") == -round(result_window.TEXT_PX * 2)  # pixels, whatever Tk thinks of DPI
    assert scaled.text_font.metrics("linespace") >= 1.8 * normal.text_font.metrics("linespace")
    assert scaled.placed.width >= 1.8 * normal.placed.width or scaled.placed.width >= SINGLE[0] - 16
    assert scaled.placed.right <= SINGLE[0] and scaled.placed.bottom <= SINGLE[1]  # still wholly on screen
