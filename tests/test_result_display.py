"""Window or toast, cancelling, and the reads without a region, without a display: the tray's own decisions.

Fakes stand where a display would be (the window is recorded, not drawn; Tk's `after` is a list the test runs) and
the engine is a fake that writes one token every 10 ms through the real hooks (`on_text`, `should_stop`), so a
read lasts long enough to stop. The real window, engine and clipboard run in test_result_window.py,
test_tray_controller.py and test_tray_reading_e2e.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dotocr.config import Settings
from dotocr.engine import OCRResult
from dotocr.tray.capture_flow import CLEAR_MS
from dotocr.tray.choices import CudaFacts
from dotocr.tray.controller import Controller, Services
from dotocr.tray.history import History
from dotocr.tray.result_display import AUTO_DELAY_MS, CopyError, displayed_spans
from tests.tray_helpers import FakeClipboard, FakeNotifier, PlanEngine, wait_for

WORDS = [f"word{i} " for i in range(300)]  # 3 s at 10 ms a token: long enough to stop


class StreamingEngine(PlanEngine):
    """Writes WORDS one per 10 ms through the engine's hooks, stopping when `should_stop` says so."""

    step_s = 0.01

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.results: list[OCRResult] = []
        self.inputs: list[Any] = []
        self.words = WORDS
        self.doubt: list[list[int]] | None = None
        """The results' low_confidence (spans of their text)."""

    def ocr(self, image: Any, **kwargs: Any) -> OCRResult:
        self.inputs.append(image)
        on_text, should_stop = kwargs.get("on_text"), kwargs.get("should_stop")
        written, reason = [], "eos"
        for word in self.words:
            time.sleep(self.step_s)
            written.append(word)
            if on_text is not None:
                on_text(word)
            if should_stop is not None and should_stop():
                reason = "cancelled"
                break
        text = "".join(written).strip()
        result = OCRResult(text=text, raw=text, prompt="text", stop_reason=reason, width=1, height=1, image_tokens=1,
                           prompt_tokens=1, generated_tokens=len(written), device="cpu", precision="fp32",
                           timings={"decode": self.step_s * len(written)}, low_confidence=self.doubt)
        self.results.append(result)
        return result


class FakeWindow:
    """Records what the display asks of a window."""

    def __init__(self, reading: Any, on_cancel: Any) -> None:
        self.reading, self.on_cancel = reading, on_cancel
        self.finished: tuple[str | None, dict[str, Any]] | None = None
        self.closed = False
        self.edited = False

    @property
    def is_open(self) -> bool:
        return not self.closed

    def finish(self, text: str | None, **options: Any) -> None:
        self.finished = (text, options)

    def close(self) -> None:
        self.closed = True


class Harness:
    def __init__(self, tmp_path: Path, mode: str, *, toasts_visible: bool = True, words: list[str] = WORDS,
                 clipboard: FakeClipboard | None = None, **services: Any) -> None:
        self.windows: list[FakeWindow] = []
        self.scheduled: list[tuple[int, Any]] = []
        self.selected: list[Any] = []

        def open_window(reading: Any, on_cancel: Any) -> FakeWindow:
            self.windows.append(FakeWindow(reading, on_cancel))
            return self.windows[-1]

        def factory(settings: Settings, on_state: Any) -> StreamingEngine:
            self.engine = StreamingEngine(settings, on_state=on_state)
            self.engine.words = words
            return self.engine

        self.controller = Controller(
            settings=Settings(result_window=mode),
            services=Services(clipboard=clipboard or FakeClipboard(), notifier=FakeNotifier(),
                              history=History(tmp_path / "history.json", 5), cuda_probe=lambda: CudaFacts(False),
                              open_result_window=open_window,
                              schedule=lambda ms, action: self.scheduled.append((ms, action)),
                              toasts_visible=lambda: toasts_visible, select_region=self.selected.append,
                              pointer=lambda: (640, 400), **services),
            engine_factory=factory)
        self.controller.start()
        assert self.controller.wait_loaded(5)

    def read(self) -> None:
        assert self.controller.start_ocr(Image.new("RGB", (40, 20)))
        self.controller.drain()

    def finish(self) -> None:
        assert self.controller.wait_idle(10)
        self.controller.drain()

    @property
    def toasts(self) -> list[str]:
        return self.controller.services.notifier.titles()

    @property
    def copied(self) -> list[str]:
        return self.controller.services.clipboard.copied


SHORT = ["Hello ", "world"]


def test_never_toasts_as_before_and_opens_no_window(tmp_path):
    harness = Harness(tmp_path, "never", words=SHORT)
    harness.read()
    harness.finish()
    assert harness.windows == [] and harness.scheduled == []
    assert harness.copied == ["Hello world"]
    assert harness.toasts == ["Copied 11 characters \u00b7 0.0 s"]


def test_always_opens_at_once_and_the_outcome_goes_to_the_window_not_a_toast(tmp_path):
    harness = Harness(tmp_path, "always", words=SHORT)
    harness.read()
    assert len(harness.windows) == 1 and harness.windows[0].reading.anchor is None
    harness.finish()
    text, options = harness.windows[0].finished
    assert text == "Hello world" and options["status"].startswith("Copied 11 characters")
    assert [label for label, _ in options["copy_choices"]] == ["Copy"]
    assert options["low_confidence"] == [] and options["problem"] is False
    assert harness.toasts == [] and harness.copied == ["Hello world"]


def test_the_results_unsure_spans_reach_the_window(tmp_path):
    harness = Harness(tmp_path, "always", words=["Hello ", "wrold"])
    harness.engine.doubt = [[6, 11]]
    harness.read()
    harness.finish()
    text, options = harness.windows[0].finished
    assert text == "Hello wrold" and options["low_confidence"] == [(6, 11)]


def test_spans_follow_each_page_into_the_joined_text():
    pages = [("first page", [[0, 5]]), ("", [[0, 3]]), ("page two", [[5, 8], [7, 99]]), ("unknown", None)]
    shown = "first page\n\n\n\npage two\n\nunknown"
    assert displayed_spans(shown, pages) == [(0, 5), (19, 22), (21, 22)]
    assert [shown[a:b] for a, b in displayed_spans(shown, pages)[:2]] == ["first", "two"]
    assert displayed_spans("edited away", [("page two", [[0, 4]])]) == []  # a text not shown marks nothing


def test_auto_toasts_a_quick_read_and_opens_the_window_for_a_slow_one(tmp_path):
    quick = Harness(tmp_path, "auto", words=SHORT)
    quick.read()
    assert quick.windows == [] and [ms for ms, _ in quick.scheduled] == [AUTO_DELAY_MS]
    quick.finish()
    quick.scheduled[0][1]()  # the delay ends after the read did: nothing opens
    assert quick.windows == [] and quick.toasts == ["Copied 11 characters \u00b7 0.0 s"]

    slow = Harness(tmp_path, "auto")
    slow.read()
    slow.scheduled[0][1]()  # still reading when the delay ends: the window opens
    assert len(slow.windows) == 1
    slow.finish()
    assert slow.windows[0].finished is not None and slow.toasts == []


def test_auto_opens_at_once_where_no_toast_can_be_seen(tmp_path):
    harness = Harness(tmp_path, "auto", toasts_visible=False, words=SHORT)
    harness.read()
    assert len(harness.windows) == 1 and harness.scheduled == []


def test_cancel_frees_the_tray_at_once_stops_the_engine_and_keeps_the_clipboard(tmp_path):
    harness = Harness(tmp_path, "always")
    controller = harness.controller
    harness.read()
    wait_for(lambda: harness.windows[0].reading.progress().tokens >= 3, 5)
    window = harness.windows[0]
    started = time.perf_counter()
    window.on_cancel()  # what Esc and the Cancel button do
    assert not controller.busy  # at once: the next capture may start
    wait_for(lambda: harness.engine.results, 2)
    assert time.perf_counter() - started < 0.5
    assert harness.engine.results[0].stop_reason == "cancelled"
    harness.finish()
    assert window.closed and window.finished is None
    assert harness.copied == [] and controller.history_items() == [] and harness.toasts == []


def test_the_hotkey_during_a_read_stops_it_and_the_next_press_captures(tmp_path):
    harness = Harness(tmp_path, "never")
    controller = harness.controller
    harness.read()
    controller.hotkey_pressed()
    assert not controller.busy and harness.selected == []
    assert "Still reading" not in harness.toasts
    controller.hotkey_pressed()
    assert len(harness.selected) == 1  # the overlay was asked for
    harness.finish()
    assert harness.engine.results[0].stop_reason == "cancelled" and harness.copied == []


def test_a_new_read_right_after_a_cancel_waits_for_nothing_but_the_engine(tmp_path):
    harness = Harness(tmp_path, "always")
    controller = harness.controller
    harness.read()
    controller.cancel_reading()
    harness.engine.words = SHORT
    harness.read()  # accepted at once, while the first read is still stopping
    harness.finish()
    assert [r.stop_reason for r in harness.engine.results] == ["cancelled", "eos"]
    assert harness.copied == ["Hello world"]
    assert harness.windows[0].closed and harness.windows[1].finished[0] == "Hello world"


def test_the_menu_cancel_does_nothing_when_nothing_is_read(tmp_path):
    harness = Harness(tmp_path, "always")
    assert harness.controller.cancel_reading() is False


def test_the_copy_button_copies_the_edited_text_and_a_failure_is_one_sentence(tmp_path):
    harness = Harness(tmp_path, "always", words=SHORT)
    harness.read()
    harness.finish()
    _label, copy = harness.windows[0].finished[1]["copy_choices"][0]
    copy("Hello edited world")
    assert harness.copied == ["Hello world", "Hello edited world"]
    harness.controller.services.clipboard.fail = OSError("xclip is gone")
    with pytest.raises(CopyError, match="xclip is gone"):
        copy("again")


def test_quit_cancels_the_read_and_closes_its_window(tmp_path):
    harness = Harness(tmp_path, "always")
    harness.read()
    harness.controller.quit()
    harness.controller.drain()
    assert harness.windows[0].closed
    harness.finish()
    assert harness.copied == []


def test_the_clipboard_without_a_picture_is_one_sentence_and_changes_nothing(tmp_path):
    harness = Harness(tmp_path, "never", grab_clipboard_picture=lambda: None)
    harness.controller.read_clipboard_picture()
    harness.finish()
    assert harness.controller.services.notifier.shown == [(
        "No picture to read", "The clipboard holds no picture; copy one (for example with a screenshot tool) and "
        "choose \"OCR the clipboard's picture\" again.")]
    assert harness.copied == []


def test_the_clipboards_picture_or_copied_file_is_read_beside_the_pointer(tmp_path):
    picture = Image.new("RGB", (30, 20), "white")
    harness = Harness(tmp_path, "always", words=SHORT, grab_clipboard_picture=lambda: picture)
    harness.controller.read_clipboard_picture()
    harness.controller.drain()
    harness.finish()
    assert harness.engine.inputs == [picture]
    anchor = harness.windows[0].reading.anchor
    assert (anchor.left, anchor.top, anchor.width, anchor.height) == (640, 400, 1, 1)
    file = tmp_path / "copied.png"
    picture.save(file)
    harness.controller.services.grab_clipboard_picture = lambda: [str(tmp_path / "gone.png"), str(file)]
    harness.controller.read_clipboard_picture()
    harness.finish()
    assert harness.engine.inputs[-1] == file


def test_an_image_file_and_a_pdf_page_by_page(tmp_path):
    png = tmp_path / "shot.png"
    Image.new("RGB", (60, 40), "white").save(png)
    pdf = tmp_path / "two pages.pdf"
    Image.new("RGB", (200, 100), "white").save(pdf, save_all=True,
                                                append_images=[Image.new("RGB", (200, 100), "gray")])
    chosen: list[Path | None] = [png, pdf, None]
    harness = Harness(tmp_path, "never", words=SHORT, ask_image_file=lambda: chosen.pop(0))
    controller = harness.controller
    controller.read_image_file()
    harness.finish()
    assert harness.engine.inputs == [png]
    controller.read_image_file()
    harness.finish()
    pages = harness.engine.inputs[1:]
    assert len(pages) == 2 and all(isinstance(p, Image.Image) for p in pages)
    assert pages[0].getpixel((5, 5)) == (255, 255, 255) and pages[1].getpixel((5, 5)) != (255, 255, 255)
    assert harness.copied[-1] == "Hello world\n\nHello world"
    controller.read_image_file()  # the dialog closed without a choice
    harness.finish()
    assert len(harness.engine.inputs) == 3



def test_a_new_capture_closes_finished_windows_but_not_one_being_edited(tmp_path):
    harness = Harness(tmp_path, "always", words=SHORT)
    harness.read()
    harness.finish()
    harness.read()
    harness.finish()
    first, second = harness.windows
    second.edited = True
    harness.controller.capture()
    assert first.closed and not second.closed
    assert harness.selected == []  # the overlay waits for the desktop to repaint under the closed window...
    [(delay, grab)] = harness.scheduled
    assert delay == CLEAR_MS
    grab()
    assert len(harness.selected) == 1  # ...then opens
    harness.selected[0](None, None)  # the overlay reports a cancel
    harness.controller.capture()  # nothing left to close: at once
    assert len(harness.selected) == 2


def test_a_table_offers_markdown_and_a_real_table_beside_the_plain_copy(tmp_path):
    """Issue 17: "Copy as Markdown / table" appear where the forms differ, and copy the answer as read."""
    table = "<table><tr><td>a</td><td>b</td></tr><tr><td>1</td><td>2</td></tr></table>"
    harness = Harness(tmp_path, "always", words=["Sales\n\n", table])
    harness.read()
    harness.finish()
    text, options = harness.windows[0].finished
    assert text == "Sales\n\na\tb\n1\t2"  # TSV: a spreadsheet pastes cells
    choices = dict(options["copy_choices"])
    assert list(choices) == ["Copy", "Copy as Markdown", "Copy as table"]
    choices["Copy as Markdown"]("an edit the forms do not carry")
    assert harness.copied[-1] == "Sales\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"
    choices["Copy as table"](text)
    rich = harness.copied[-1]
    assert rich.text == text and "<td>1</td><td>2</td>" in rich.html

