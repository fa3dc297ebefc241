"""Where the result window goes and what it says, as pure functions: no display needed."""

from __future__ import annotations

import pytest

from dotocr.capture import Monitor, Rect, monitor_at, place_near
from dotocr.capture.dpi import parse_xft_dpi
from dotocr.engine import OCRResult
from dotocr.tray.messages import outcome_line, outcome_toast, progress_line
from dotocr.tray.reading import Outcome, Progress, Reading
from dotocr.tray.text_area import segments

AREA = Rect(0, 0, 1920, 1080)


def inside(rect: Rect, area: Rect) -> bool:
    return area.left <= rect.left and area.top <= rect.top and rect.right <= area.right and rect.bottom <= area.bottom


def overlaps(a: Rect, b: Rect) -> bool:
    return a.left < b.right and b.left < a.right and a.top < b.bottom and b.top < a.bottom


def test_below_the_selection_left_edges_aligned():
    spot = place_near(Rect(300, 200, 400, 100), AREA, 560, 250, 10)
    assert spot == Rect(300, 310, 560, 250)


def test_above_when_there_is_no_room_below():
    spot = place_near(Rect(300, 900, 400, 100), AREA, 560, 250, 10)
    assert spot == Rect(300, 640, 560, 250)


def test_to_the_right_then_the_left_when_the_selection_is_tall():
    assert place_near(Rect(100, 50, 300, 1000), AREA, 560, 250, 10) == Rect(410, 50, 560, 250)
    assert place_near(Rect(1400, 50, 500, 1000), AREA, 560, 250, 10) == Rect(830, 50, 560, 250)


def test_over_the_bottom_of_a_selection_that_fills_the_monitor():
    spot = place_near(Rect(0, 0, 1920, 1080), AREA, 560, 250, 10)
    assert spot == Rect(0, 830, 560, 250)


@pytest.mark.parametrize("anchor", [Rect(1900, 1060, 20, 20), Rect(-50, -50, 10, 10), Rect(1915, 10, 5, 5),
                                    Rect(5000, 5000, 1, 1)])
def test_never_off_screen_whatever_the_anchor(anchor):
    spot = place_near(anchor, AREA, 560, 250, 10)
    assert inside(spot, AREA)
    assert (spot.width, spot.height) == (560, 250)


def test_a_window_larger_than_the_monitor_shrinks_to_it():
    small = Rect(1920, 0, 640, 400)  # a second monitor, right of the first
    spot = place_near(Rect(2000, 100, 50, 50), small, 1200, 900, 10)
    assert spot == small


def test_on_a_monitor_left_of_and_above_the_primary_negative_coordinates_work():
    area = Rect(-1280, -200, 1280, 1024)
    selection = Rect(-1000, 500, 300, 200)
    spot = place_near(selection, area, 560, 250, 10)
    assert inside(spot, area) and not overlaps(spot, selection)
    assert spot.left == -1000


def test_beside_never_covers_the_selection_when_there_is_room():
    for top in range(0, 1000, 97):
        for left in range(0, 1800, 211):
            selection = Rect(left, top, 120, 60)
            spot = place_near(selection, AREA, 560, 250, 10)
            assert inside(spot, AREA) and not overlaps(spot, selection), (selection, spot)


def test_the_monitor_under_a_point_or_the_nearest():
    first, second = Monitor(0, 0, 0, 1920, 1080), Monitor(1, 1920, 200, 1280, 1024)
    assert monitor_at(100, 100, [first, second]) is first
    assert monitor_at(2000, 300, [first, second]) is second
    assert monitor_at(2000, 190, [first, second]) is second  # in the gap above the second: the nearest
    assert monitor_at(1990, 50, [first, second]) is first
    assert monitor_at(-40, 500, [first, second]) is first
    with pytest.raises(ValueError):
        monitor_at(0, 0, [])


def test_inset_keeps_a_margin_but_never_empties_the_rect():
    assert Rect(0, 0, 100, 50).inset(8) == Rect(8, 8, 84, 34)
    assert Rect(0, 0, 10, 3).inset(8) == Rect(1, 1, 8, 1)


@pytest.mark.parametrize(("resources", "dpi"), [
    ("Xft.antialias:\t1\nXft.dpi:\t192\nXft.hinting:\t1\n", 192.0),
    ("Xft.dpi: 120.5", 120.5),
    ("Xcursor.size: 24\n", None),
    ("Xft.dpi: lots", None),
    ("Xft.dpi: 0", None),
    ("", None),
])
def test_xft_dpi_is_read_from_the_x_resources(resources, dpi):
    assert parse_xft_dpi(resources) == dpi


def test_segments_clip_and_merge_sloppy_spans():
    assert segments("abcdef", [(1, 3)]) == [("a", False), ("bc", True), ("def", False)]
    assert segments("abcdef", [(4, 99), (-5, 1), (2, 3), (2, 4)]) == [("a", True), ("b", False), ("cdef", True)]
    assert segments("a\U0001F600b", [(1, 2)]) == [("a", False), ("\U0001F600", True), ("b", False)]
    assert segments("", [(0, 3)]) == []


def result(tokens: int, decode: float) -> OCRResult:
    return OCRResult(text="x", raw="x", prompt="text", stop_reason="eos", width=1, height=1, image_tokens=1,
                     prompt_tokens=1, generated_tokens=tokens, device="cpu", precision="fp32",
                     timings={"decode": decode})


def test_the_window_and_toast_words_for_each_outcome():
    copied = Outcome("copied", 3.04, "Hello world", results=[result(24, 2.0)])
    assert outcome_line(copied) == "Copied 11 characters \u00b7 3.0 s \u00b7 12.0 tokens/s"
    assert outcome_toast(copied) == ("Copied 11 characters \u00b7 3.0 s", "Hello world")
    empty = Outcome("empty", 12.4)
    assert outcome_line(empty) == "Nothing recognised \u00b7 12 s \u00b7 the clipboard was left unchanged."
    failed = Outcome("failed", 1, sentence="The picture is empty.")
    assert outcome_line(failed) == "The picture is empty."
    assert outcome_toast(failed) == ("OCR failed", "The picture is empty.")
    lost = Outcome("copy_failed", 1, "text", sentence="xclip is not installed.", in_history=True)
    assert outcome_toast(lost) == ("Could not copy the text",
                                   "xclip is not installed; the text is in History, click it there to copy it again.")
    assert outcome_line(lost) == "Not copied: xclip is not installed."


def test_progress_words_before_and_after_the_first_token_and_per_page():
    assert progress_line(Progress(1.26, 0, None)) == "Reading the picture\u2026 1.3 s"
    assert progress_line(Progress(2.0, 1, None)) == "Writing\u2026 2.0 s \u00b7 1 token"
    assert progress_line(Progress(14.2, 30, 7.25, 2, 5)) == \
        "Page 2 of 5 \u00b7 Writing\u2026 14 s \u00b7 30 tokens \u00b7 7.2 tokens/s"


def test_a_reading_counts_tokens_and_streams_text_and_cancels():
    reading = Reading()
    assert reading.progress().tokens == 0 and reading.progress().tokens_per_second is None
    reading.on_text("Hel")
    assert reading.should_stop() is False
    reading.on_text("lo")
    assert reading.should_stop() is False
    assert reading.text_from(0) == "Hello" and reading.text_from(3) == "lo"
    progress = reading.progress()
    assert progress.tokens == 2 and progress.tokens_per_second is not None and progress.tokens_per_second > 0
    reading.next_page(2, 3)
    assert reading.text_from(5) == "\n\n" and reading.progress().pages == 3
    reading.cancel()
    assert reading.cancelled and reading.should_stop() is True
