"""The tray controller with the real engine (tiny checkpoint), the real clipboard (xclip under Xvfb),
real history and autostart files, and the real X11 hotkey backend. Only the notifier is wrapped, to
read what was shown; the overlay is exercised end to end in test_tray_e2e.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from dotocr.capture import Monitor, Region, grab_all, grab_rect
from dotocr.config import Settings, SettingsFile
from dotocr.desktop.autostart import get_autostart
from dotocr.desktop.clipboard import get_clipboard
from dotocr.desktop.hotkey import get_hotkey_backend
from dotocr.tray.choices import CudaFacts
from dotocr.tray.controller import Controller, Services
from dotocr.tray.history import History
from dotocr.tray.services import open_with_os
from tests.capture_helpers import pattern_image
from tests.tray_helpers import (
    BlankEngine,
    RecordingEngine,
    RecordingNotifier,
    tiny_settings,
    wait_for,
    xclip_read,
    xclip_write,
)
from tests.xvfb import needs_xvfb, xvfb_fixture

pytestmark = [needs_xvfb, pytest.mark.x11, pytest.mark.timeout(120)]

xvfb = xvfb_fixture(640, 480)


def make_controller(
    settings: Settings,
    tmp_path: Path,
    *,
    engine_cls: type = RecordingEngine,
    settings_file: SettingsFile | None = None,
    file_settings: Settings | None = None,
    overrides: dict | None = None,
    last_region_path: Path | None = None,
    engine_factory=None,
    **services: object,
) -> Controller:
    engines: list[RecordingEngine] = []

    def factory(s: Settings, on_state):  # the real engine, recording what it is given
        engine = engine_cls(s, on_state=on_state)
        engines.append(engine)
        return engine

    defaults = dict(
        clipboard=get_clipboard(),
        notifier=RecordingNotifier(),
        history=History(tmp_path / "history.json", settings.history_size),
        autostart=get_autostart(),
    )
    defaults.update(services)
    controller = Controller(settings=settings, services=Services(**defaults),
                            engine_factory=engine_factory or factory, settings_file=settings_file,
                            file_settings=file_settings, launch_flags=["--max-image-size", "1024"],
                            overrides=overrides, last_region_path=last_region_path)
    controller.engines = engines  # type: ignore[attr-defined]
    return controller


@pytest.fixture
def loaded(xvfb, dots_tiny, tmp_path) -> Controller:
    controller = make_controller(tiny_settings(dots_tiny), tmp_path)
    controller.start()
    assert controller.wait_loaded(60)
    assert controller.state().status == "ready", controller.status_text()
    return controller


def titles(controller: Controller) -> list[str]:
    return controller.services.notifier.titles()  # type: ignore[attr-defined]


def test_a_crop_goes_to_the_engine_and_its_text_to_the_clipboard_history_and_a_toast(loaded):
    xclip_write("before")
    crop = pattern_image(120, 80)
    assert loaded.start_ocr(crop)
    assert loaded.busy and loaded.state().status == "busy"
    assert loaded.wait_idle(60)

    engine = loaded.engine
    assert len(engine.images) == 1 and engine.images[0].tobytes() == crop.tobytes()
    text = engine.results[0].text
    assert text.strip(), "the tiny model is expected to produce some text"
    assert xclip_read() == text
    assert [entry.text for entry in loaded.history_items()] == [text]
    title, body = loaded.services.notifier.shown[-1]
    assert title.startswith(f"Copied {len(text):,} character")
    assert body  # a preview of the text
    assert not loaded.busy and loaded.state().status == "ready"


def test_an_empty_result_keeps_the_clipboard_and_says_nothing_was_recognised(xvfb, dots_tiny, tmp_path):
    controller = make_controller(tiny_settings(dots_tiny), tmp_path, engine_cls=BlankEngine)
    controller.start()
    xclip_write("keep me")
    assert controller.start_ocr(pattern_image(60, 40))
    assert controller.wait_idle(60)
    assert len(controller.engine.results) == 1
    assert xclip_read() == "keep me"
    assert controller.history_items() == []
    assert titles(controller)[-1].startswith("Nothing recognised")


def test_a_second_capture_while_reading_is_refused_with_a_toast_and_works_afterwards(loaded):
    engine = loaded.engine
    engine.gate = threading.Event()
    opened: list[object] = []
    loaded.services.select_region = lambda on_done: opened.append(on_done)
    try:
        assert loaded.start_ocr(pattern_image(60, 40))
        assert engine.entered.wait(10)
        assert loaded.start_ocr(pattern_image(30, 30)) is False  # a second crop is refused...
        loaded.capture()  # ...and so is a hotkey press: no overlay opens
        loaded.repeat_last_region()
        assert opened == []
        assert titles(loaded).count("Still reading") == 3
    finally:
        engine.gate.set()
    assert loaded.wait_idle(60)
    assert len(engine.images) == 1
    loaded.capture()
    assert len(opened) == 1  # free again: the overlay is asked for


def test_an_engine_error_becomes_one_sentence_and_the_clipboard_is_kept(loaded):
    xclip_write("untouched")
    assert loaded.start_ocr(Image.new("RGB", (0, 0)))
    assert loaded.wait_idle(30)
    title, text = loaded.services.notifier.shown[-1]
    assert title == "OCR failed"
    assert "Traceback" not in text and text.endswith(".")
    assert xclip_read() == "untouched"
    assert not loaded.busy


def test_menu_changes_are_saved_but_command_line_overrides_are_not(xvfb, dots_tiny, tmp_path):
    settings_file = SettingsFile(tmp_path / "settings.toml")
    settings_file.path.write_text('hotkey = "ctrl+alt+p"\nmax_image_size = 800\n', encoding="utf-8")
    file_settings = settings_file.load()
    # as if started with --max-image-size 1024 --hotkey ctrl+alt+shift+o
    run_settings = file_settings.replace(max_image_size=1024, hotkey="ctrl+alt+shift+o", model=str(dots_tiny))
    controller = make_controller(run_settings, tmp_path, settings_file=settings_file,
                                 file_settings=file_settings)

    controller.set_output("markdown")
    assert (controller.settings.prompt, controller.settings.output_format) == ("layout", "markdown")
    assert controller.output_choice() == "markdown"
    saved = SettingsFile(settings_file.path).load()
    assert (saved.prompt, saved.output_format) == ("layout", "markdown")
    assert saved.max_image_size == 800 and saved.hotkey == "ctrl+alt+p"  # the overrides stayed out
    assert controller.settings.max_image_size == 1024  # but still apply to this run

    controller.change_settings(max_image_size=640)  # the same item changed from the menu: now it is saved
    assert SettingsFile(settings_file.path).load().max_image_size == 640


def test_a_broken_settings_file_is_never_overwritten_and_warned_about_once(xvfb, dots_tiny, tmp_path, caplog):
    settings_file = SettingsFile(tmp_path / "settings.toml")
    broken = b'hotkey = "ctrl+alt+o"\nmax_image_size = = 3\n'
    settings_file.path.write_bytes(broken)
    file_settings = settings_file.load()
    controller = make_controller(file_settings.replace(model=str(dots_tiny)), tmp_path,
                                 settings_file=settings_file, file_settings=file_settings)
    with caplog.at_level(logging.WARNING):
        controller.report_settings_problems(settings_file.problems + ["A second problem."])
    assert titles(controller) == ["Settings problem"]
    assert "line 2" in controller.services.notifier.shown[0][1]
    assert "1 more" in controller.services.notifier.shown[0][1]
    assert sum("A second problem." in r.getMessage() for r in caplog.records) == 1

    controller.set_output("markdown")
    controller.change_settings(max_image_size=512)
    assert controller.settings.output_format == "markdown"  # applies to this run...
    assert settings_file.path.read_bytes() == broken  # ...and the file is untouched
    assert titles(controller).count("Settings not saved") == 1


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as the desktop opener")
def test_open_settings_file_creates_it_from_the_file_settings_and_opens_it(xvfb, dots_tiny, tmp_path,
                                                                           monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened.txt"
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{opened}"\n', encoding="utf-8")
    opener.chmod(opener.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    settings_file = SettingsFile(tmp_path / "cfg" / "settings.toml")
    file_settings = Settings(history_size=7)
    controller = make_controller(file_settings.replace(max_image_size=1024), tmp_path,
                                 settings_file=settings_file, file_settings=file_settings)
    controller.open_settings_file()
    assert SettingsFile(settings_file.path).load() == file_settings
    wait_for(opened.exists, 10)
    assert opened.read_text(encoding="utf-8") == str(settings_file.path)

    # no opener on this desktop: a toast says where the file is instead
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert open_with_os(settings_file.path) is False
    controller.open_settings_file()
    assert str(settings_file.path) in controller.services.notifier.shown[-1][1]


def test_start_at_login_toggles_the_autostart_entry_with_the_launch_flags(xvfb, dots_tiny, tmp_path):
    controller = make_controller(tiny_settings(dots_tiny), tmp_path)
    assert controller.autostart_enabled() is False
    controller.toggle_autostart()
    assert controller.autostart_enabled() is True
    entry = Path(os.environ["XDG_CONFIG_HOME"]) / "autostart" / "dotocr.desktop"
    content = entry.read_text(encoding="utf-8")
    assert "--max-image-size 1024" in content
    controller.toggle_autostart()
    assert controller.autostart_enabled() is False


def test_history_items_can_be_copied_again(xvfb, dots_tiny, tmp_path):
    controller = make_controller(tiny_settings(dots_tiny), tmp_path)
    controller.services.history.add("first result")
    controller.services.history.add("second result")
    xclip_write("something else")
    older = controller.history_items()[1]
    controller.copy_history_item(older)
    assert xclip_read() == "first result"
    assert titles(controller) == ["Copied again"]


def test_precision_choices_follow_the_engine_and_gpu_choices_need_cuda(loaded, tmp_path):
    assert loaded.cuda == CudaFacts(False)  # this machine has no CUDA GPU
    assert loaded.precision_choice() == "cpu"
    before = loaded.settings
    loaded.set_precision("4bit")
    assert loaded.settings == before
    assert titles(loaded)[-1] == "No CUDA GPU"

    auto = make_controller(loaded.settings.replace(device="auto", precision="auto"), tmp_path)
    assert auto.precision_choice() is None  # nothing loaded yet: unknown
    auto.start()
    assert auto.wait_loaded(60)
    assert auto.precision_choice() == "cpu"  # auto resolved to the CPU
    assert auto.status_text() in ("Ready (fp32 on cpu)", "Ready (bf16 on cpu)")  # what the engine measured


@pytest.fixture
def auto_device(xvfb, dots_tiny, tmp_path) -> Controller:
    """Loaded with device "auto" (the CPU here) in fp32, from a settings file."""
    settings_file = SettingsFile(tmp_path / "settings.toml")
    settings = tiny_settings(dots_tiny, device="auto")
    settings_file.save(settings)
    controller = make_controller(settings, tmp_path, settings_file=settings_file, file_settings=settings)
    controller.start()
    assert controller.wait_loaded(60)
    return controller


def test_clicking_the_cpu_item_auto_already_chose_changes_nothing(auto_device):
    """The real engine's resolved plan checks the item; the old tray compared the requested strings
    ("auto", "fp32") with ("cpu", "auto"), saved them and reconfigured the engine."""
    engine = auto_device.engine
    before, saved = engine.settings, auto_device.tray_settings.file.path.read_bytes()
    assert (engine.device, engine.precision) == ("cpu", "fp32")
    assert auto_device.precision_choice() == "cpu"
    auto_device.set_precision("cpu")
    assert auto_device.wait_loaded(60)
    assert engine.settings is before  # not reconfigured
    assert auto_device.settings.device == "auto"
    assert auto_device.tray_settings.file.path.read_bytes() == saved
    assert titles(auto_device) == []


def test_a_precision_change_during_a_read_returns_at_once_and_reloads_afterwards(auto_device):
    """The settings file switches fp32 to bf16 while a read holds the model: Reload settings returns at once,
    the read finishes in fp32, then the same engine reloads in bf16 (the engine decides: its plan changed)."""
    engine = auto_device.engine
    engine.gate = threading.Event()
    safety = threading.Timer(3, engine.gate.set)  # were the Tk thread blocked, the read would end first
    safety.start()
    try:
        assert auto_device.start_ocr(pattern_image(60, 40))
        assert engine.entered.wait(10)  # the read now holds the model
        file_settings = auto_device.tray_settings.file_settings
        auto_device.tray_settings.file.save(file_settings.replace(precision="bf16"))
        started = time.perf_counter()
        auto_device.reload_settings()  # what the menu click runs on the Tk thread
        elapsed = time.perf_counter() - started
        assert elapsed < 0.5, f"the Tk thread was blocked for {elapsed:.1f} s"
        assert auto_device.settings.precision == "bf16"
        time.sleep(0.2)
        assert engine.settings.precision == "fp32"  # the read is not disturbed
    finally:
        engine.gate.set()
        safety.cancel()
    assert auto_device.wait_idle(30)
    assert auto_device.wait_loaded(60)
    assert len(engine.results) == 1 and engine.results[0].precision == "fp32"
    assert auto_device.engine is engine
    assert (engine.device, engine.precision) == ("cpu", "bf16")  # reloaded, in what was asked
    assert auto_device.status_text() == "Ready (bf16 on cpu)"


def test_a_capture_fails_at_once_when_the_engine_cannot_be_created(xvfb, dots_tiny, tmp_path):
    """The factory raises as `make_engine` does when torch cannot be imported (a broken install, which
    cannot be had here for real); the capture asked for meanwhile must fail at once, not wait 10 minutes."""
    creating = threading.Event()

    def broken_factory(settings, on_state):
        creating.wait(10)
        raise ImportError("No module named 'torch'")

    controller = make_controller(tiny_settings(dots_tiny), tmp_path, engine_factory=broken_factory)
    controller.start()
    xclip_write("untouched")
    assert controller.start_ocr(pattern_image(40, 40))  # while the engine is still being created
    time.sleep(0.2)
    assert controller.busy
    creating.set()
    assert controller.wait_idle(5)
    shown = controller.services.notifier.shown
    assert [title for title, _ in shown] == ["The model could not be loaded", "OCR failed"]
    assert "torch" in shown[-1][1]
    # the next capture reports the stored reason at once, too
    creating.set()
    assert controller.start_ocr(pattern_image(40, 40))
    assert controller.wait_idle(5)
    assert titles(controller)[-1] == "OCR failed" and "torch" in controller.services.notifier.shown[-1][1]
    assert xclip_read() == "untouched"
    assert controller.history_items() == []
    assert not controller.busy and controller.state().status == "error"


def test_when_copying_fails_the_text_is_kept_in_history_and_the_toast_says_so(loaded, monkeypatch):
    monkeypatch.delenv("DISPLAY")  # the clipboard tool (xclip) can no longer reach the X server
    assert loaded.start_ocr(pattern_image(80, 60))
    assert loaded.wait_idle(60)
    text = loaded.engine.results[0].text
    assert text.strip()
    assert [entry.text for entry in loaded.history_items()] == [text]
    title, body = loaded.services.notifier.shown[-1]
    assert title == "Could not copy the text"
    assert "History" in body and body.endswith(".") and "Traceback" not in body


def test_a_capture_error_is_shown_as_it_is_without_a_traceback(xvfb, dots_tiny, tmp_path, caplog, monkeypatch):
    # a region saved in an earlier session, on a monitor that is gone now
    saved = tmp_path / "last_region.json"
    saved.write_text(json.dumps(Region(Monitor(1, 640, 0, 800, 600), 10, 10, 50, 40).to_dict()), encoding="utf-8")
    controller = make_controller(tiny_settings(dots_tiny), tmp_path, last_region_path=saved,
                                 grab_region=lambda r: grab_rect(r.left, r.top, r.width, r.height),
                                 select_region=lambda on_done: grab_all())  # the overlay's first step
    with caplog.at_level(logging.ERROR):
        controller.repeat_last_region()
        monkeypatch.delenv("DISPLAY")  # the screen cannot be opened at all
        controller.capture()
    assert titles(controller) == ["Capture failed", "Capture failed"]
    repeat_text, capture_text = (text for _title, text in controller.services.notifier.shown)
    assert repeat_text.startswith("The region 50x40+650+10 is not on any current monitor")
    assert capture_text.startswith("Could not open the screen for capture")
    for text in (repeat_text, capture_text):
        assert text.endswith(".") and "(The" not in text
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 2 and all(r.exc_info is None for r in failures)
    assert not controller.busy
    opened: list[object] = []
    controller.services.select_region = opened.append
    controller.capture()
    assert len(opened) == 1  # the failure left nothing half-open: the next capture asks for the overlay


def test_free_gpu_memory_unloads_until_the_next_capture(loaded):
    loaded.free_memory()
    wait_for(lambda: loaded.state().status == "unloaded", 10)
    assert "next capture" in loaded.status_text()
    assert loaded.start_ocr(pattern_image(40, 40))
    assert loaded.wait_idle(60)
    assert loaded.state().status == "ready"


def test_posted_work_runs_only_when_drained_and_a_failing_action_does_not_stop_the_rest(xvfb, dots_tiny,
                                                                                         tmp_path):
    controller = make_controller(tiny_settings(dots_tiny), tmp_path)
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("bug")

    poster = threading.Thread(target=lambda: controller.post(ran.append, "from another thread"))
    poster.start()
    poster.join()
    controller.post(boom)
    controller.post(ran.append, "after the failure")
    assert ran == []
    assert controller.drain() == 3
    assert sorted(ran) == ["after the failure", "from another thread"]


def test_quit_unregisters_the_hotkey_before_the_app_stops(xvfb, dots_tiny, tmp_path):
    order: list[str] = []
    backend = get_hotkey_backend()
    settings = tiny_settings(dots_tiny, hotkey="ctrl+alt+shift+u")
    controller = make_controller(settings, tmp_path, hotkey=backend)
    assert controller.register_hotkey()
    real_unregister = backend.unregister

    def unregister() -> None:
        order.append("hotkey unregistered")
        real_unregister()

    backend.unregister = unregister  # type: ignore[method-assign]
    controller.on_quit = lambda: order.append("app stopped")
    controller.quit()
    controller.quit()  # a second Quit click does nothing
    assert order == ["hotkey unregistered", "app stopped"]
    controller.capture()  # after Quit a late hotkey press is ignored
    assert titles(controller) == []


def xclip_write_png(path: Path) -> None:
    """Own the clipboard with a PNG, as a screenshot tool does (xclip forks and keeps serving it)."""
    import subprocess

    subprocess.run(["xclip", "-selection", "clipboard", "-t", "image/png", "-i", str(path)], timeout=5, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_the_clipboards_picture_is_read_from_the_real_x11_clipboard(loaded, tmp_path):
    picture = pattern_image(90, 50)
    picture.save(tmp_path / "shot.png")
    xclip_write_png(tmp_path / "shot.png")
    loaded.read_clipboard_picture()
    assert loaded.wait_idle(60)
    engine = loaded.engine
    assert len(engine.images) == 1 and engine.images[0].tobytes() == picture.tobytes()
    wait_for(lambda: xclip_read() == engine.results[0].text, 10)  # the picture gave way to its text

    xclip_write("only text here")
    loaded.read_clipboard_picture()
    assert loaded.wait_idle(30)
    assert titles(loaded)[-1] == "No picture to read"
    assert len(engine.images) == 1 and xclip_read() == "only text here"


def test_an_image_file_that_is_no_picture_is_one_sentence_and_changes_nothing(loaded, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture", encoding="utf-8")
    loaded.services.ask_image_file = lambda: notes
    xclip_write("untouched")
    loaded.read_image_file()
    assert loaded.wait_idle(30)
    title, sentence = loaded.services.notifier.shown[-1]
    assert title == "OCR failed" and "notes.txt" in sentence and "Traceback" not in sentence, sentence
    assert xclip_read() == "untouched"
