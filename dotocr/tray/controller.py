"""The tray's mediator: it wires the owners of the tray's state together and turns menu clicks into their calls.

Who owns what:
- `EngineHost` (engine_host.py): the engine, its loader thread, the state shown, the GPU's facts, the local API;
- `TraySettings` (tray_settings.py): the settings file, this run's command-line flags, menu saves, reload;
- `CaptureFlow` (capture_flow.py): the overlay, the running read, the last region;
- `HotkeyBinding` (hotkey_binding.py): the registered hotkey and why it does not work;
- `ResultDisplay` (result_display.py): the result windows, and whether a read ends in a window or a toast.
The controller itself holds only the Tk-thread queue and whether the tray is quitting. Hotkey, pystray and
single-instance callbacks only `post()` work; the Tk thread runs it in `drain()`. Nothing on the way to the
icon imports torch, transformers or the web server.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from dotocr.config import Settings, SettingsFile
from dotocr.engine import EngineState, Status
from dotocr.tray.capture_flow import CaptureFlow
from dotocr.tray.choices import (
    GPU_KEYS,
    OUTPUT_CHOICES,
    CudaFacts,
    output_key,
    precision_key,
    precision_label,
    precision_target,
    requested_key,
)
from dotocr.tray.engine_host import EngineFactory, EngineHost
from dotocr.tray.hotkey_binding import HotkeyBinding
from dotocr.tray.messages import error_sentence, preview
from dotocr.tray.result_display import ResultDisplay
from dotocr.tray.services import Services, open_with_os
from dotocr.tray.status_words import status_line
from dotocr.tray.tray_settings import TraySettings

if TYPE_CHECKING:
    from dotocr.engine import Engine

__all__ = ["Controller", "EngineFactory", "Services"]

log = logging.getLogger(__name__)


class Controller:
    """Everything the tray does, independent of how the icon and overlay are drawn."""

    def __init__(
        self,
        *,
        settings: Settings,
        services: Services,
        engine_factory: EngineFactory,
        settings_file: SettingsFile | None = None,
        file_settings: Settings | None = None,
        launch_flags: list[str] | None = None,
        last_region_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.services = services
        self.on_change: Callable[[], None] | None = None
        self.on_quit: Callable[[], None] | None = None
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self._quitting = False
        self.tray_settings = TraySettings(settings, notify=self.notify, settings_file=settings_file,
                                          file_settings=file_settings, overrides=overrides,
                                          launch_flags=launch_flags)
        self.host = EngineHost(engine_factory, settings=lambda: self.tray_settings.current, changed=self._changed,
                               notify=self.notify, cuda_probe=services.cuda_probe)
        self.display = ResultDisplay(post=self.post, notify=self.notify, mode=lambda: self.settings.result_window,
                                     copy=lambda text: self.services.clipboard.copy(text),
                                     open_window=services.open_result_window, schedule=services.schedule,
                                     toasts_visible=services.toasts_visible or (lambda: True))
        self.flow = CaptureFlow(services, engine=self.host.engine_for_ocr, changed=self._changed,
                                notify=self.notify, listener=self.display, quitting=lambda: self._quitting,
                                last_region_path=last_region_path)
        self.display.cancel = self.flow.cancel_reading
        self.hotkeys = HotkeyBinding(services.hotkey, unavailable=services.hotkey_unavailable, notify=self.notify)

    # -- the Tk-thread queue ---------------------------------------------------------------------------

    def post(self, action: Callable[..., Any], *args: Any) -> None:
        """Hand work to the Tk thread; safe from any thread, never blocks."""
        self._queue.put((action, args))

    def drain(self) -> int:
        """Run everything posted so far (on the Tk thread). A failing action is logged, not fatal."""
        done = 0
        while True:
            try:
                action, args = self._queue.get_nowait()
            except queue.Empty:
                return done
            try:
                action(*args)
            except Exception:
                log.exception("Tray action %s failed", getattr(action, "__name__", action))
            done += 1

    # -- what the icon, tooltip and menu read --------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.tray_settings.current

    @property
    def engine(self) -> Engine | None:
        return self.host.engine

    @property
    def cuda(self) -> CudaFacts | None:
        return self.host.cuda

    @property
    def busy(self) -> bool:
        return self.flow.busy

    @property
    def quitting(self) -> bool:
        return self._quitting

    @property
    def last_region(self) -> Any | None:
        return self.flow.last_region

    @property
    def hotkey_error(self) -> str | None:
        return self.hotkeys.error

    def state(self) -> EngineState:
        """The engine host's state; while a capture is read (or waits for a model that is in memory or freed)
        it says busy, since the engine says so only once the read holds the model."""
        state = self.host.state
        if self.flow.busy and state.status in (Status.READY, Status.UNLOADED):
            return dataclasses.replace(state, status=Status.BUSY, detail="reading the capture")
        return state

    def status_text(self) -> str:
        return status_line(self.state())

    def _changed(self) -> None:
        callback = self.on_change
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("Updating the tray icon failed")

    def notify(self, title: str, text: str) -> None:
        try:
            self.services.notifier.notify(title, text)
        except Exception:
            log.exception("Notification failed: %s: %s", title, text)

    # -- start-up ------------------------------------------------------------------------------------------

    def report_settings_problems(self, problems: list[str]) -> None:
        self.tray_settings.report_problems(problems)

    def register_hotkey(self) -> bool:
        registered = self.hotkeys.register(self.settings.hotkey, lambda: self.post(self.hotkey_pressed))
        self._changed()
        return registered

    def start(self) -> None:
        """Create and load the engine in the background; returns at once."""
        self.host.load()

    def retry_load(self) -> None:
        """Menu "Retry loading the model": the settings file may have been fixed, so read it again first."""
        self.reload_settings()

    def wait_loaded(self, timeout: float) -> bool:
        return self.host.wait_loaded(timeout)

    # -- capture (the flow owns it) ------------------------------------------------------------------------

    def capture(self) -> None:
        self.flow.capture()

    def hotkey_pressed(self) -> None:
        """The hotkey, or a second `dotocr-tray --capture` (Wayland's hotkey): capture; again, close the overlay
        or stop the read."""
        self.flow.hotkey_pressed()

    def repeat_last_region(self) -> None:
        self.flow.repeat_last_region()

    def read_image_file(self) -> None:
        self.flow.read_image_file()

    def read_clipboard_picture(self) -> None:
        self.flow.read_clipboard_picture()

    def cancel_reading(self) -> bool:
        return self.flow.cancel_reading()

    def start_ocr(self, image: Image.Image, *, anchor: Any | None = None) -> bool:
        return self.flow.start_ocr(image, anchor=anchor)

    def wait_idle(self, timeout: float) -> bool:
        return self.flow.wait_idle(timeout)

    # -- precision and output --------------------------------------------------------------------------------

    def precision_choice(self) -> str | None:
        """The checked precision item: an explicit request (a switch may still be under way), else what `auto`
        resolved to; None while nothing has resolved it."""
        key = requested_key(self.settings)
        if key is None and (plan := self.host.plan) is not None:
            key = precision_key(*plan)
        return key

    def precision_label(self, key: str) -> str:
        """The item's words; the 16-bit one says what runs or would run: BF16 or FP16."""
        half = None
        if key == "16bit":
            plan, cuda = self.host.plan, self.host.cuda
            if plan is not None and precision_key(*plan) == "16bit":
                half = plan[1]
            elif requested_key(self.settings) == "16bit":
                half = self.settings.precision
            elif cuda is not None and cuda.available:
                half = precision_target(key, cuda)[1]
        return precision_label(key, half)

    def precision_enabled(self, key: str) -> bool:
        cuda = self.host.cuda
        return key not in GPU_KEYS or (cuda is not None and cuda.available)

    def set_precision(self, key: str) -> None:
        """A precision item was clicked. The engine decides on its loader thread whether the new settings change
        what runs (its `reconfigure` compares resolved plans); clicking the checked item changes nothing."""
        if not self.precision_enabled(key):
            self.notify("No CUDA GPU", "PyTorch sees no CUDA GPU here, so the model can only run on the CPU.")
            return
        if key == self.precision_choice():
            return
        device, precision = precision_target(key, self.host.cuda)
        self.tray_settings.change(device=device, precision=precision)
        if self.flow.busy:
            self.notify("Precision", f"Switching to {self.precision_label(key)} once this capture is read.")
        self.host.load()
        self._changed()

    def output_choice(self) -> str:
        return output_key(self.settings)

    def set_output(self, key: str) -> None:
        _label, prompt, output_format = OUTPUT_CHOICES[key]
        self.change_settings(prompt=prompt, output_format=output_format)

    def change_settings(self, **changes: Any) -> bool:
        """Apply a menu change for this run and save it; command-line values of other items stay out of the file.
        The engine gets the new settings (a freed model stays freed); the next read waits until it has them."""
        saved = self.tray_settings.change(**changes)
        self.host.load(keep_freed=True)
        self._changed()
        return saved

    # -- other menu actions ---------------------------------------------------------------------------------

    def free_memory(self) -> None:
        if self.flow.busy:
            self.flow.refuse_busy()
            return
        self.host.unload_in_background()

    def reload_settings(self) -> None:
        """Menu "Reload settings": the file again, this run's command-line values on top, applied live.

        A file that cannot be parsed keeps the current settings (one toast says why). The engine gets the new
        settings on the loader thread and decides itself whether its model must be reloaded; a model the person
        freed stays freed."""
        old = self.settings
        new = self.tray_settings.reload()
        if self.hotkeys.should_retry(old.hotkey, new.hotkey):
            self.hotkeys.unregister()
            self.register_hotkey()
        try:
            self.services.history.resize(new.history_size)
        except Exception:
            log.exception("Resizing the history failed")
        if (new.api_enabled, new.api_port) != (old.api_enabled, old.api_port):
            self.host.stop_api()
            if new.api_enabled:
                self.host.start_api()
        if new.engine != old.engine and self.host.engine is not None:
            self.notify("Restart dotocr-tray", f"The engine setting changed to {new.engine!r}; quit and start "
                        "dotocr-tray again to switch between the local model and a remote server.")
        if new != old or self.host.engine is None or self.host.state.status is Status.ERROR:
            self.host.load(keep_freed=True)
        self._changed()

    def history_items(self) -> list[Any]:
        try:
            return list(self.services.history.items())
        except Exception:
            log.exception("Reading the history failed")
            return []

    def copy_history_item(self, item: Any) -> None:
        text = getattr(item, "text", item)
        try:
            copied = self.services.clipboard.copy(text)
        except Exception as exc:
            self.notify("Could not copy the text", error_sentence(exc))
            return
        if copied:
            self.notify("Copied again", preview(text))

    def autostart_enabled(self) -> bool:
        backend = self.services.autostart
        if backend is None:
            return False
        try:
            return bool(backend.is_enabled())
        except Exception:
            log.exception("Reading the start-at-login state failed")
            return False

    def toggle_autostart(self) -> None:
        backend = self.services.autostart
        if backend is None:
            self.notify("Start at login is not available", "This desktop has no autostart mechanism we know.")
            return
        try:
            if backend.is_enabled():
                backend.disable()
            else:
                from dotocr.desktop.autostart import default_tray_command

                backend.enable(default_tray_command(self.tray_settings.launch_flags))
        except Exception as exc:
            log.exception("Changing start at login failed")
            self.notify("Start at login was not changed", error_sentence(exc))
        self._changed()

    def open_settings_file(self) -> None:
        """Create the file from the current file settings if it is missing, then open it."""
        settings_file = self.tray_settings.file
        if settings_file is None:
            return
        if not self.tray_settings.ensure_file():
            self.notify("Settings file not created", f"{settings_file.path} could not be written.")
            return
        opener = self.services.open_file or open_with_os
        if not opener(settings_file.path):
            self.notify("Settings file", f"Open {settings_file.path} in a text editor, then choose Reload settings "
                        "in the menu.")

    def toggle_api(self) -> None:
        enabled = not self.settings.api_enabled
        self.change_settings(api_enabled=enabled)
        if enabled:
            self.host.start_api()
        else:
            self.host.stop_api()

    def quit(self) -> None:
        """Menu Quit (Tk thread): the hotkey first (no capture can start), a running read and its window, then
        the local API; app.py then stops the icon and, last, Tk."""
        if self._quitting:
            return
        self._quitting = True
        self.hotkeys.unregister()
        self.flow.cancel_reading()  # the engine stops within a step; nothing reaches the clipboard
        self.display.close_all()
        self.host.stop()
        if self.on_quit is not None:
            self.on_quit()
