"""The pystray menu, driven by calling its items as pystray would on a click, under Xvfb; the same
menu drawn with Tk (pystray's X11 backend has no menu of its own); and the icon pictures/tooltips."""

from __future__ import annotations

import os
import socket
import tkinter as tk
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomli_w

from dotocr.config import SettingsFile
from dotocr.desktop.hotkey import get_hotkey_backend
from dotocr.engine import EngineState, Status
from dotocr.tray.engine_host import api_available
from dotocr.tray.icon import draw_icon
from dotocr.tray.menu import build_menu, fill_tk_menu
from dotocr.tray.status_words import TOOLTIP_MAX, tooltip
from tests.test_tray_controller import make_controller
from tests.tray_helpers import tiny_settings, wait_for, xclip_read, xclip_write
from tests.xvfb import needs_xdotool, needs_xvfb, xdotool, xvfb_fixture

pytestmark = [needs_xvfb, pytest.mark.x11, pytest.mark.timeout(120)]

xvfb = xvfb_fixture(640, 480)


@pytest.fixture
def icon(xvfb):
    import pystray  # on X11 pystray connects to the display when imported

    icon = pystray.Icon("dotocr-test", draw_icon(EngineState(Status.READY)), "dotocr")
    yield icon
    # pystray's X11 icon closes its display connection only when garbage-collected, which may be after
    # this module's Xvfb is gone; close it now, while the server still answers.
    display = getattr(icon, "_display", None)
    if display is not None:
        display.close()
        icon._display = SimpleNamespace(close=lambda: None)


def item_named(menu, text: str):
    for item in menu.items:
        if item.text.split("\t")[0] == text:
            return item
    raise AssertionError(f"no menu item {text!r} in {[i.text for i in menu.items]}")


def click(controller, menu, icon, *path: str) -> None:
    """Activate a menu item the way pystray does, then let the Tk thread's queue run it."""
    for name in path[:-1]:
        menu = item_named(menu, name).submenu
    item = item_named(menu, path[-1])
    assert item.enabled, f"{path} is disabled"
    item(icon)
    controller.drain()


def visible_labels(menu) -> list[str]:
    import pystray

    return ["---" if i is pystray.Menu.SEPARATOR else i.text.split("\t")[0] for i in menu]


@pytest.fixture
def controller(xvfb, dots_tiny, tmp_path):
    return make_controller(tiny_settings(dots_tiny), tmp_path)


def test_the_menu_has_every_entry_in_order(controller, icon):
    menu = build_menu(controller)
    labels = visible_labels(menu)
    api = ["Expose local API (127.0.0.1:8765)"] if api_available() else []
    assert labels == [
        "Loading the model", "---", "Capture region", "Repeat last region", "OCR an image file\u2026",
        "OCR the clipboard's picture", "Cancel reading", "---", "Precision", "Output",
        "History", "---", "Start at login", *api, "Free GPU memory", "Open settings file", "Reload settings",
        "---", "Quit",
    ]
    assert item_named(menu, "Capture region").text.endswith(controller.settings.hotkey)
    # nothing has asked the GPU yet: the 16-bit item cannot say bf16 or fp16
    assert visible_labels(item_named(menu, "Precision").submenu) == ["4-bit GPU", "16-bit GPU", "CPU"]
    assert visible_labels(item_named(menu, "Output").submenu) == ["Plain text", "Markdown"]
    assert not item_named(menu, "Repeat last region").enabled  # nothing captured yet
    assert not item_named(menu, "Cancel reading").enabled  # nothing is being read
    assert item_named(menu, "Capture region").default  # a click on the icon captures


def test_without_cuda_the_gpu_items_are_disabled_and_cpu_is_checked(controller, icon):
    controller.start()
    assert controller.wait_loaded(60)
    precision = item_named(build_menu(controller), "Precision").submenu
    assert [(i.text, i.enabled, i.checked, i.radio) for i in precision.items] == [
        ("4-bit GPU", False, False, True), ("16-bit GPU", False, False, True), ("CPU", True, True, True)]
    assert item_named(build_menu(controller), "Ready (fp32 on cpu)") is not None  # what runs, as resolved


def test_output_radio_switches_to_markdown_and_back(controller, icon):
    menu = build_menu(controller)
    output = item_named(menu, "Output").submenu
    assert [(i.text, i.checked) for i in output.items if i.visible] == [("Plain text", True), ("Markdown", False)]
    click(controller, menu, icon, "Output", "Markdown")
    assert (controller.settings.prompt, controller.settings.output_format) == ("layout", "markdown")
    assert [i.checked for i in output.items if i.visible] == [False, True]
    click(controller, menu, icon, "Output", "Plain text")
    assert (controller.settings.prompt, controller.settings.output_format) == ("text", "text")


def test_with_dots_mocr_the_output_menu_offers_its_prompts(xvfb, dots_tiny, tmp_path, icon):
    mocr = tmp_path / "DotsMOCR"  # recognised by its name: dots.mocr's config.json is dots.ocr's
    mocr.symlink_to(dots_tiny, target_is_directory=True)
    controller = make_controller(tiny_settings(mocr), tmp_path)
    menu = build_menu(controller)
    output = item_named(menu, "Output").submenu
    assert [i.text for i in output.items if i.visible] == [
        "Plain text", "Markdown", "Web page (Markdown)", "Scene text", "Picture as SVG", "Describe the picture"]
    click(controller, menu, icon, "Output", "Scene text")
    assert (controller.settings.prompt, controller.settings.output_format) == ("scene-text", "text")
    assert [i.text for i in output.items if i.visible and i.checked] == ["Scene text"]


def test_history_lists_results_newest_first_and_a_click_copies_again(controller, icon):
    menu = build_menu(controller)
    history = item_named(menu, "History").submenu
    assert [(i.text, i.enabled) for i in history.items] == [("No results yet", False)]
    controller.services.history.add("an older result")
    controller.services.history.add("the newest result " + "x" * 80)
    labels = [i.text for i in history.items]  # the submenu is rebuilt from the history each time
    assert labels[0].startswith("the newest result") and labels[0].endswith("\u2026")
    assert labels[1] == "an older result"
    xclip_write("something else")
    click(controller, menu, icon, "History", "an older result")
    assert xclip_read() == "an older result"


def test_start_at_login_checkbox_writes_and_removes_the_autostart_entry(controller, icon):
    menu = build_menu(controller)
    entry = Path(os.environ["XDG_CONFIG_HOME"]) / "autostart" / "dotocr.desktop"
    assert item_named(menu, "Start at login").checked is False
    click(controller, menu, icon, "Start at login")
    assert entry.exists() and item_named(menu, "Start at login").checked is True
    click(controller, menu, icon, "Start at login")
    assert item_named(menu, "Start at login").checked is False


def test_free_gpu_memory_unloads_the_model(controller, icon):
    menu = build_menu(controller)
    assert not item_named(menu, "Free GPU memory").enabled  # nothing loaded yet
    controller.start()
    assert controller.wait_loaded(60)
    click(controller, menu, icon, "Free GPU memory")
    wait_for(lambda: controller.state().status == "unloaded", 10)
    assert visible_labels(menu)[0].startswith("Model not in memory")


def test_capture_and_repeat_go_through_the_queue(controller, icon):
    from dotocr.capture import Monitor, Region

    opened: list[object] = []
    controller.services.select_region = opened.append
    menu = build_menu(controller)
    item_named(menu, "Capture region")(icon)
    assert opened == []  # pystray's thread only posted the work
    controller.drain()
    assert len(opened) == 1
    controller.flow.last_region = Region(Monitor(0, 0, 0, 640, 480), 10, 10, 50, 40)
    assert item_named(menu, "Repeat last region").enabled


@pytest.mark.skipif(not api_available(), reason="dotocr.server is not installed")
def test_expose_local_api_serves_the_tray_engine_on_loopback(xvfb, dots_tiny, tmp_path, icon):
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = make_controller(tiny_settings(dots_tiny, api_port=port), tmp_path)
    controller.start()
    assert controller.wait_loaded(60)
    menu = build_menu(controller)
    label = f"Expose local API (127.0.0.1:{port})"
    assert item_named(menu, label).checked is False
    click(controller, menu, icon, label)
    wait_for(lambda: controller.host.api_server is not None, 20)
    assert item_named(menu, label).checked is True
    health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    assert health["status"] == "ready"
    click(controller, menu, icon, label)
    assert controller.host.api_server is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_open_settings_file_creates_the_file(controller, icon, tmp_path):
    from dotocr.config import SettingsFile

    controller.tray_settings.file = SettingsFile(tmp_path / "made" / "settings.toml")
    controller.services.open_file = lambda path: True
    click(controller, build_menu(controller), icon, "Open settings file")
    assert controller.tray_settings.file.path.exists()


def test_quit_runs_the_quit_sequence(controller, icon):
    stopped: list[bool] = []
    controller.on_quit = lambda: stopped.append(True)
    click(controller, build_menu(controller), icon, "Quit")
    assert stopped == [True] and controller.quitting


def settings_file_with(tmp_path: Path, text: str) -> SettingsFile:
    settings_file = SettingsFile(tmp_path / "settings.toml")
    settings_file.path.write_text(text, encoding="utf-8")
    return settings_file


def controller_from_file(settings_file: SettingsFile, tmp_path: Path, overrides: dict | None = None, **services):
    """As app.main builds it: the file's settings with this run's command-line values on top."""
    file_settings = settings_file.load()
    assert settings_file.problems == []
    overrides = overrides or {}
    return make_controller(file_settings.replace(**overrides), tmp_path, settings_file=settings_file,
                           file_settings=file_settings, overrides=overrides, **services)


def tiny_toml(model: Path, **values) -> str:
    settings = {"model": str(model), "device": "cpu", "precision": "fp32", "max_new_tokens": 8,
                "max_image_size": 448, **values}
    return tomli_w.dumps(settings)


def test_a_load_error_shows_the_reason_and_retry_reads_the_fixed_file(icon, dots_tiny, tmp_path):
    missing = tmp_path / "missing-model"
    settings_file = settings_file_with(tmp_path, tiny_toml(missing))
    controller = controller_from_file(settings_file, tmp_path)
    controller.start()
    assert controller.wait_loaded(30)
    menu = build_menu(controller)
    assert visible_labels(menu)[0].startswith("Error: ")
    assert "missing-model" in visible_labels(menu)[0]
    assert controller.state().status == "error"
    notifier = controller.services.notifier

    # retry as it is: the same failure again, nothing crashes
    click(controller, menu, icon, "Retry loading the model")
    assert controller.wait_loaded(30)
    assert notifier.titles().count("The model could not be loaded") == 2

    # the person fixes the model path in the file; Retry reads it and loads
    settings_file.path.write_text(tiny_toml(dots_tiny), encoding="utf-8")
    click(controller, menu, icon, "Retry loading the model")
    assert controller.wait_loaded(60)
    assert controller.state().status == "ready"
    assert controller.engine.settings.model == str(dots_tiny)
    assert "Retry loading the model" not in visible_labels(menu)
    assert notifier.titles().count("The model could not be loaded") == 2


def test_reload_settings_applies_the_file_with_the_command_line_on_top(icon, dots_tiny, tmp_path):
    settings_file = settings_file_with(tmp_path, tiny_toml(dots_tiny, history_size=5))
    # as if started with --max-image-size 1024
    controller = controller_from_file(settings_file, tmp_path, overrides={"max_image_size": 1024})
    controller.start()
    assert controller.wait_loaded(60)
    engine = controller.engine
    for number in range(5):
        controller.services.history.add(f"result {number}")

    settings_file.path.write_text(tiny_toml(dots_tiny, history_size=2, max_image_size=640, max_new_tokens=4,
                                            prompt="layout", output_format="markdown"), encoding="utf-8")
    click(controller, build_menu(controller), icon, "Reload settings")
    settings = controller.settings
    assert settings.max_image_size == 1024  # the command line still wins for this run
    assert (settings.history_size, settings.max_new_tokens, settings.output_format) == (2, 4, "markdown")
    assert controller.output_choice() == "markdown"
    assert [entry.text for entry in controller.history_items()] == ["result 4", "result 3"]
    wait_for(lambda: engine.settings == settings, 10)  # reconfigured (on a worker thread), same engine
    assert controller.engine is engine and controller.state().status == "ready"
    assert controller.services.notifier.titles() == []

    # a half-saved, broken file: one toast naming the line, and the tray keeps what it had
    settings_file.path.write_text('history_size = 3\nmax_new_tokens = = 9\n', encoding="utf-8")
    click(controller, build_menu(controller), icon, "Reload settings")
    assert controller.services.notifier.titles() == ["Settings problem"]
    assert "line 2" in controller.services.notifier.shown[0][1]
    assert controller.settings == settings


@needs_xdotool
def test_a_taken_hotkey_is_reported_and_a_new_one_in_the_file_works_after_reload(icon, dots_tiny, tmp_path):
    from Xlib import XK, X, display

    other_app = display.Display()  # another X client holds a grab on ctrl+alt+shift+o
    root = other_app.screen().root
    keycode = other_app.keysym_to_keycode(XK.string_to_keysym("o"))
    modifiers = X.ControlMask | X.Mod1Mask | X.ShiftMask
    root.grab_key(keycode, modifiers, False, X.GrabModeAsync, X.GrabModeAsync)
    other_app.sync()
    backend = get_hotkey_backend()
    opened: list[object] = []
    try:
        settings_file = settings_file_with(tmp_path, tiny_toml(dots_tiny, hotkey="ctrl+alt+shift+o"))
        controller = controller_from_file(settings_file, tmp_path, hotkey=backend, select_region=opened.append)
        assert controller.register_hotkey() is False
        assert "ctrl+alt+shift+o" in controller.hotkey_error
        assert controller.services.notifier.titles() == ["Hotkey not available"]
        menu = build_menu(controller)
        assert visible_labels(menu)[1].startswith("Hotkey problem: ")

        settings_file.path.write_text(tiny_toml(dots_tiny, hotkey="ctrl+alt+shift+p"), encoding="utf-8")
        click(controller, menu, icon, "Reload settings")
        assert controller.hotkey_error is None
        assert not visible_labels(menu)[1].startswith("Hotkey problem")
        assert item_named(menu, "Capture region").text.endswith("ctrl+alt+shift+p")
        xdotool("key", "ctrl+alt+shift+p")  # the new combination really is listened for
        wait_for(lambda: controller.drain() >= 0 and bool(opened), 5)
    finally:
        backend.unregister()
        other_app.close()


def test_a_hotkey_problem_is_a_status_line(controller, icon):
    controller.hotkeys.error = "The hotkey ctrl+alt+shift+o is already taken by another program."
    labels = visible_labels(build_menu(controller))
    assert labels[1] == "Hotkey problem: The hotkey ctrl+alt+shift+o is already taken by another program."


def test_without_a_native_menu_a_click_opens_the_tk_menu(controller, icon):
    opened: list[bool] = []
    menu = build_menu(controller, on_open_menu=lambda: opened.append(True))
    assert "Open menu" not in visible_labels(menu)
    icon.menu = menu
    icon()  # what pystray's X11 backend does on a left click
    assert opened == [True]


def test_the_tk_rendering_mirrors_the_pystray_menu_and_its_entries_act(controller, icon):
    menu = build_menu(controller)
    root = tk.Tk()
    try:
        tk_menu = tk.Menu(root, tearoff=False)
        fill_tk_menu(tk_menu, menu, icon)
        labels = []
        for index in range(tk_menu.index("end") + 1):
            kind = tk_menu.type(index)
            label = "---" if kind == "separator" else tk_menu.entrycget(index, "label")
            labels.append(label.split("    ")[0])
        assert labels == visible_labels(menu)
        assert tk_menu.entrycget(0, "state") == "disabled"  # the status line
        output_index = labels.index("Output")
        output = root.nametowidget(tk_menu.entrycget(output_index, "menu"))
        assert output.type(1) == "radiobutton"
        output.invoke(1)  # Markdown
        controller.drain()
        assert controller.settings.output_format == "markdown"
    finally:
        root.destroy()


# -- icon pictures and tooltips -------------------------------------------------------------------


def test_every_state_has_its_own_picture():
    pictures = {status: draw_icon(EngineState(status)).tobytes() for status in Status}
    assert len(set(pictures.values())) == len(Status)
    for size in (16, 32, 64):
        image = draw_icon(EngineState(Status.READY), size)
        assert image.size == (size, size) and image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0  # transparent corner, the tray shows through


def test_the_download_percentage_is_drawn():
    ten = draw_icon(EngineState(Status.DOWNLOADING, progress=0.10)).tobytes()
    ninety = draw_icon(EngineState(Status.DOWNLOADING, progress=0.90)).tobytes()
    assert ten != ninety


def test_a_long_tooltip_can_be_set_on_the_x11_icon(icon):
    from dotocr.tray.app import icon_title

    long = tooltip(EngineState(Status.ERROR, detail="The model folder /home/zoë/模型 does not exist " * 4), "x")
    title = icon_title(icon, long)
    title.encode("latin-1")  # what pystray's X11 backend does with it
    assert title.startswith("dotocr: The model folder /home/zoë/?? does not exist") and title.endswith("?")


def test_tooltips_say_the_state_and_fit_windows():
    ready = tooltip(EngineState(Status.READY, device="cuda", precision="bf16"), "ctrl+alt+shift+o")
    assert ready == "dotocr: ready (bf16 on cuda), press ctrl+alt+shift+o to capture"
    assert tooltip(EngineState(Status.DOWNLOADING, progress=0.42), "x") == "dotocr: downloading the model 42%"
    long = tooltip(EngineState(Status.ERROR, detail="The model could not be loaded " * 10), "x")
    assert len(long) == TOOLTIP_MAX and long.endswith("\u2026")
    assert "taken" in tooltip(EngineState(Status.READY), "ctrl+o", problem="hotkey taken")
