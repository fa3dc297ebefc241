"""The tray's state machine: engine state, one OCR at a time, capture -> OCR -> clipboard -> toast.

Threads: hotkey, pystray and single-instance callbacks only `post()` work; the Tk thread runs it
in `drain()`. Model loading and OCR run on worker threads so the tray, hotkey and overlay stay
responsive. Nothing here imports torch or transformers at import time, so the tray starts at once.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from dotocr.config import Settings, SettingsFile
from dotocr.errors import DotOCRError, ModelUnavailableError
from dotocr.storage import write_atomic
from dotocr.tray.icon import IconState

log = logging.getLogger(__name__)

PRECISION_CHOICES = {
    # menu key: (label, device, precision)
    "4bit": ("4-bit GPU", "cuda", "4bit"),
    "fp16": ("FP16 GPU", "cuda", "fp16"),
    "cpu": ("CPU", "cpu", "auto"),
}
OUTPUT_CHOICES = {
    # menu key: (label, prompt mode, output format); Markdown uses the layout prompt for tables and formulas
    "text": ("Plain text", "text", "text"),
    "markdown": ("Markdown", "layout", "markdown"),
}


class Engine(Protocol):
    state: Any

    def load(self) -> None: ...
    def unload(self) -> None: ...
    def reconfigure(self, settings: Settings) -> None: ...
    def ocr(self, image: Any, **options: Any) -> Any: ...


EngineFactory = Callable[[Settings, Callable[[Any], None]], Engine]
RegionDone = Callable[[Any, "Image.Image | None"], None]


class Notifier(Protocol):
    def notify(self, title: str, text: str) -> None: ...


@dataclass
class Services:
    """The platform pieces the controller drives; app.py picks the real ones for this OS."""

    clipboard: Any
    """`copy(text) -> bool` (never writes empty text)."""
    notifier: Notifier
    history: Any
    """`dotocr.tray.history.History`."""
    autostart: Any | None = None
    hotkey: Any | None = None
    """A hotkey backend (`register(hotkey, callback)`, `unregister()`), None where none works."""
    hotkey_unavailable: str = ""
    """Why there is no hotkey backend, when `hotkey` is None."""
    select_region: Callable[[RegionDone], None] | None = None
    """Opens the overlay on the Tk thread; calls back once with (region, crop) or (None, None)."""
    cancel_selection: Callable[[], None] | None = None
    """Closes an open overlay as a cancel (its callback then gets (None, None)); Tk thread."""
    grab_region: Callable[[Any], Image.Image] | None = None
    """Grabs a saved region's desktop rectangle again, for "Repeat last region"."""
    open_file: Callable[[Path], bool] | None = None
    cuda_available: Callable[[], bool] | None = None


def open_with_os(path: Path) -> bool:
    """Open a file with the desktop's default app; False when there is no opener (never raises)."""
    try:
        if sys.platform == "win32":
            os.startfile(path)  # type: ignore[attr-defined]
            return True
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        if shutil.which(opener) is None:
            return False
        subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        return True
    except OSError as exc:
        log.warning("Could not open %s: %s", path, exc)
        return False


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


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
        self.settings = settings
        self.file_settings = file_settings if file_settings is not None else settings
        """What the settings file holds; menu changes go here too, CLI overrides never do."""
        self.overrides: dict[str, Any] = dict(overrides) if overrides is not None else _differences(
            self.file_settings, settings)
        """This run's command-line values, applied again on top of the file by "Reload settings"."""
        self.settings_file = settings_file
        self.services = services
        self.launch_flags = list(launch_flags or [])
        self.last_region_path = last_region_path
        self.last_region: Any | None = self._read_last_region()
        self.engine: Engine | None = None
        self.engine_state: Any | None = None
        self.load_error: str | None = None
        self.hotkey_error: str | None = None
        self.cuda_available: bool | None = None
        self.api_handle: Any | None = None
        self.on_change: Callable[[], None] | None = None
        self.on_quit: Callable[[], None] | None = None

        self._engine_factory = engine_factory
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self._lock = threading.RLock()
        self._load_attempted = threading.Event()
        """Set at the end of every load attempt (success or failure); cleared when a new one is asked for."""
        self._loader: threading.Thread | None = None
        self._loading = False
        self._reload_requested = False
        self._job: threading.Thread | None = None
        self._ocr_running = False
        self._selecting = False
        self._save_warned = False
        self._quitting = False

    # -- the Tk-thread queue ---------------------------------------------------------------------

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

    # -- state shown by the icon and menu ----------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._ocr_running

    @property
    def quitting(self) -> bool:
        return self._quitting

    def icon_state(self) -> IconState:
        if self._ocr_running:
            return IconState("busy", "reading the capture")
        state = self.engine_state
        status = getattr(state, "status", None)
        if self.load_error and status not in ("ready", "busy", "loading", "downloading"):
            return IconState("error", self.load_error)
        if state is None:
            return IconState("loading", "starting")
        return IconState(status or "unloaded", getattr(state, "detail", "") or "",
                         getattr(state, "progress", None))

    def status_text(self) -> str:
        state = self.icon_state()
        if state.status == "ready":
            text = f"Ready ({self._precision_label()})"
        elif state.status == "downloading":
            percent = f" {int(state.progress * 100)}%" if state.progress is not None else ""
            text = f"Downloading the model{percent}"
        elif state.status == "loading":
            text = "Loading the model"
        elif state.status == "busy":
            text = "Reading the capture"
        elif state.status == "unloaded":
            text = "Model not in memory (loads on the next capture)"
        else:
            text = f"Error: {state.detail or 'unknown'}"
        return text

    def _changed(self) -> None:
        callback = self.on_change
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("Updating the tray icon failed")

    def _on_engine_state(self, state: Any) -> None:
        """The engine's callback; may run on any thread."""
        self.engine_state = state
        self._changed()

    def notify(self, title: str, text: str) -> None:
        try:
            self.services.notifier.notify(title, text)
        except Exception:
            log.exception("Notification failed: %s: %s", title, text)

    # -- start-up ------------------------------------------------------------------------------------

    def report_settings_problems(self, problems: list[str]) -> None:
        """Log each problem; show one toast so a broken file is noticed but not nagged about."""
        for problem in problems:
            log.warning("%s", problem)
        if problems:
            more = f" (and {len(problems) - 1} more, see the log)" if len(problems) > 1 else ""
            self.notify("Settings problem", problems[0] + more)

    def register_hotkey(self) -> bool:
        """Register the configured hotkey; a taken or malformed one becomes a toast and a menu line."""
        backend = self.services.hotkey
        combo = self.settings.hotkey
        if backend is None:
            self.hotkey_error = self.services.hotkey_unavailable or (
                f"The hotkey {combo} cannot work on this desktop; capture from the tray menu instead.")
            self.notify("No global hotkey", self.hotkey_error)
            self._changed()
            return False
        from dotocr.tray.hotkey import HotkeyError, parse_hotkey

        try:
            backend.register(parse_hotkey(combo), lambda: self.post(self.hotkey_pressed))
        except (HotkeyError, ValueError) as exc:
            self.hotkey_error = str(exc)
            self.notify("Hotkey not available", str(exc))
            self._changed()
            return False
        self.hotkey_error = None
        self._changed()
        return True

    def start(self) -> None:
        """Create and load the engine in the background; returns at once."""
        self._start_loader()

    def _start_loader(self) -> None:
        """Create (once), reconfigure and load the engine on the loader thread: both may wait for a read
        to finish (the engine's model lock), which must never happen on the Tk thread."""
        with self._lock:
            self._load_attempted.clear()
            if self._loading:
                self._reload_requested = True
                return
            self._loading, self._reload_requested = True, False
            self._loader = threading.Thread(target=self._load_loop, name="dotocr-load", daemon=True)
            self._loader.start()

    def _load_loop(self) -> None:
        again = True
        while again:
            try:
                self._load_once()
            finally:
                with self._lock:
                    again = self._reload_requested and not self._quitting
                    self._reload_requested = False
                    if not again:  # a capture waiting for the engine waits for the last queued attempt
                        self._loading = False
                        self._load_attempted.set()

    def _load_once(self) -> None:
        try:
            engine = self.engine
            if engine is None:
                engine = self._engine_factory(self.settings, self._on_engine_state)
                with self._lock:
                    self.engine = engine
                    if self.engine_state is None:
                        self.engine_state = getattr(engine, "state", None)
                self._update_cuda()
                if self.settings.api_enabled:
                    self._start_api()
            else:
                engine.reconfigure(self.settings)  # waits here, not on the Tk thread, while a read runs
            self.load_error = None
            self._changed()
            engine.load()
        except Exception as exc:
            self.load_error = _error_sentence(exc)
            log.error("Loading the model failed: %s", self.load_error, exc_info=not _is_dotocr_error(exc))
            self.notify("The model could not be loaded", self.load_error)
        self._changed()

    def _update_cuda(self) -> None:
        probe = self.services.cuda_available or _torch_cuda_available
        try:
            self.cuda_available = bool(probe())
        except Exception:
            log.exception("Checking for CUDA failed")
            self.cuda_available = False

    def retry_load(self) -> None:
        """Menu "Retry loading the model": the settings file may have been fixed, so read it again first."""
        self.reload_settings()

    def wait_loaded(self, timeout: float) -> bool:
        """For tests and `--capture` at start: wait for the current load attempt to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            loader = self._loader
            if loader is not None:
                loader.join(max(0.0, deadline - time.monotonic()))
                if not loader.is_alive() and loader is self._loader:
                    return True
            else:
                time.sleep(0.01)
        return False

    # -- capture and OCR -------------------------------------------------------------------------

    def hotkey_pressed(self) -> None:
        """The hotkey opens the overlay, or closes it when it is open: an overlay that lost the keyboard
        focus (so Esc does not reach it) can always be dismissed the way it was called up."""
        if self._selecting and not self._quitting:
            self.cancel_capture()
        else:
            self.capture()

    def cancel_capture(self) -> None:
        cancel = self.services.cancel_selection
        if cancel is None:
            return
        try:
            cancel()
        except Exception:
            log.exception("Closing the overlay failed")
        self._selecting = False

    def capture(self) -> None:
        """Hotkey / menu / second launch: open the overlay (Tk thread). Refused while OCR runs."""
        if self._quitting or self._selecting:
            return
        if self._ocr_running:
            self._refuse_busy()
            return
        select = self.services.select_region
        if select is None:
            self.notify("Capture is not available", "No screen overlay could be opened on this desktop.")
            return
        self._selecting = True
        try:
            select(self._on_region_selected)
        except Exception as exc:
            self._selecting = False
            self._capture_failed("Opening the overlay failed", exc, "The screen could not be captured")

    def _on_region_selected(self, region: Any, crop: Image.Image | None) -> None:
        self._selecting = False
        # The overlay's Tk objects are gone now: collect any cycles among them here, on the Tk thread. Left to
        # a later collection on a worker thread (the engine's unload collects garbage), Tk aborts the process.
        gc.collect()
        if region is None or crop is None:
            return  # cancelled: nothing changes, the clipboard keeps its content
        self._remember_region(region)
        self.start_ocr(crop)

    def repeat_last_region(self) -> None:
        if self._ocr_running:
            self._refuse_busy()
            return
        region = self.last_region
        if region is None:
            self.notify("No region yet", "Capture a region first; then it can be repeated without dragging.")
            return
        if self.services.grab_region is None:
            self.notify("Capture is not available", "The screen cannot be grabbed on this desktop.")
            return
        try:
            crop = self.services.grab_region(region)
        except Exception as exc:
            self._capture_failed("Grabbing the last region failed", exc,
                                 "The last region could not be grabbed again")
            return
        self.start_ocr(crop)

    def _capture_failed(self, what: str, exc: Exception, sentence: str) -> None:
        """A CaptureError already says what to do, as is; anything else is a bug and gets a traceback."""
        if isinstance(exc, DotOCRError):
            log.error("%s: %s", what, exc)
            self.notify("Capture failed", str(exc))
        else:
            log.exception(what)
            self.notify("Capture failed", f"{sentence} ({exc}).")

    def _refuse_busy(self) -> None:
        self.notify("Still reading", "The last capture is still being read; try again in a moment.")

    def start_ocr(self, image: Image.Image) -> bool:
        """Read `image` on a worker thread; False (with a toast) if one is already running."""
        with self._lock:
            if self._ocr_running:
                refused = True
            else:
                refused = False
                self._ocr_running = True
        if refused:
            self._refuse_busy()
            return False
        self._changed()
        job = threading.Thread(target=self._ocr_job, args=(image,), name="dotocr-ocr", daemon=True)
        self._job = job
        job.start()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """For tests: wait until the running OCR job, if any, has finished."""
        job = self._job
        if job is not None:
            job.join(timeout)
            return not job.is_alive()
        return True

    def _ocr_job(self, image: Image.Image) -> None:
        started = time.monotonic()
        try:
            result = self._run_engine(image)
            self._deliver(result.text, time.monotonic() - started, result)
        except Exception as exc:
            log.error("OCR failed: %s", exc, exc_info=not _is_dotocr_error(exc))
            self.notify("OCR failed", _error_sentence(exc))
        finally:
            with self._lock:
                self._ocr_running = False
            self._changed()

    def _run_engine(self, image: Image.Image) -> Any:
        engine = self.engine
        if engine is None:
            # still being created: wait for this attempt to end; a failed one is reported at once
            if self._loader is None:
                self._start_loader()
            if not self._load_attempted.wait(timeout=600):
                raise ModelUnavailableError("The OCR engine did not start within 10 minutes; see the log, then "
                                            "choose Retry loading the model in the tray menu.")
            engine = self.engine
        if engine is None:
            raise ModelUnavailableError(self.load_error or "The OCR engine could not be started; the log has "
                                        "the details.")
        return engine.ocr(image, prompt=self.settings.prompt, output_format=self.settings.output_format)

    def _deliver(self, text: str, seconds: float, result: Any = None) -> None:
        from dotocr.tray.notification import summarize_result

        if not text.strip():
            self.notify(*summarize_result("", seconds))  # the clipboard keeps what it had
            return
        in_history = True
        try:  # history first: a clipboard failure must not lose the text
            self.services.history.add(text, prompt=getattr(result, "prompt", self.settings.prompt))
        except Exception:
            in_history = False
            log.exception("Saving the result to the history failed")
        self._changed()
        try:
            self.services.clipboard.copy(text)
        except Exception as exc:
            log.error("Copying to the clipboard failed: %s", exc)
            reason = _error_sentence(exc).rstrip(".")
            where = "; the text is in History, click it there to copy it again." if in_history else "."
            self.notify("Could not copy the text", reason + where)
            return
        self.notify(*summarize_result(text, seconds))

    # -- menu actions ----------------------------------------------------------------------------

    def free_memory(self) -> None:
        if self._ocr_running:
            self._refuse_busy()
            return
        threading.Thread(target=self._unload, name="dotocr-unload", daemon=True).start()

    def _unload(self) -> None:
        engine = self.engine
        if engine is None:
            return
        try:
            engine.unload()
        except Exception:
            log.exception("Unloading the model failed")
        self._changed()

    def precision_choice(self) -> str | None:
        """Which precision radio item is on: the setting, or for "auto" what the engine actually chose."""
        device, precision = self.settings.device, self.settings.precision
        if device == "auto" or precision == "auto":
            engine = self.engine
            device = getattr(engine, "device", None) or device
            precision = getattr(engine, "precision", None) or precision
        if device == "cpu":
            return "cpu"
        if precision == "4bit":
            return "4bit"
        if precision in ("fp16", "bf16"):
            return "fp16"
        return None

    def _precision_label(self) -> str:
        state = self.engine_state
        device = getattr(state, "device", None)
        choice = self.precision_choice()
        if choice is not None:
            return PRECISION_CHOICES[choice][0]
        return device or self.settings.device

    def set_precision(self, choice: str) -> None:
        _label, device, precision = PRECISION_CHOICES[choice]
        if device == "cuda" and not self.cuda_available:
            self.notify("No CUDA GPU", "PyTorch sees no CUDA GPU here, so the model can only run on the CPU.")
            return
        if (self.settings.device, self.settings.precision) == (device, precision):
            return
        self.change_settings(device=device, precision=precision)
        self.load_error = None
        if self._ocr_running:
            self.notify("Precision", f"Switching to {PRECISION_CHOICES[choice][0]} once this capture is read.")
        self._start_loader()  # reconfigures on the loader thread, after a running read has finished

    def output_choice(self) -> str:
        return "markdown" if self.settings.prompt == "layout" else "text"

    def set_output(self, choice: str) -> None:
        _label, prompt, output_format = OUTPUT_CHOICES[choice]
        self.change_settings(prompt=prompt, output_format=output_format)

    def change_settings(self, **changes: Any) -> bool:
        """Apply a menu change for this run and save it; CLI overrides of other items stay out of the file."""
        self.settings = self.settings.replace(**changes)
        self.file_settings = self.file_settings.replace(**changes)
        for key in changes:  # a menu choice is newer than the command line it replaces
            self.overrides.pop(key, None)
        saved = True
        if self.settings_file is not None:
            saved = self.settings_file.update(changes)
            if not saved and not self._save_warned:
                self._save_warned = True
                self.notify("Settings not saved", f"The settings file {self.settings_file.path} could not be "
                            "read or written, so menu changes last until you quit; fix the file to keep them.")
        self._changed()
        return saved

    def reload_settings(self) -> None:
        """Menu "Reload settings": the file again, this run's command-line values on top, applied live.

        A file that cannot be parsed now keeps the current settings (one toast says why), so a half-saved
        edit never throws the tray back to defaults. The engine is reconfigured on the loader thread."""
        old = self.settings
        settings_file = self.settings_file
        if settings_file is not None:
            file_settings = settings_file.load()
            self.report_settings_problems(settings_file.problems)
            if not settings_file.broken:
                self.file_settings = file_settings
                self.settings = file_settings.replace(**self.overrides)
                self._save_warned = False
        new = self.settings
        if new.hotkey != old.hotkey or (self.hotkey_error is not None and self.services.hotkey is not None):
            self._reregister_hotkey()  # a combination taken earlier may be free now
        try:
            self.services.history.resize(new.history_size)
        except Exception:
            log.exception("Resizing the history failed")
        if (new.api_enabled, new.api_port) != (old.api_enabled, old.api_port):
            self._stop_api()
            if new.api_enabled:
                self._start_api()
        engine_keys = ("model", "device", "precision", "engine", "remote_url", "remote_api_key", "remote_model")
        needs_load = any(getattr(new, key) != getattr(old, key) for key in engine_keys)
        if new.engine != old.engine and self.engine is not None:
            self.notify("Restart dotocr-tray", f"The engine setting changed to {new.engine!r}; quit and start "
                        "dotocr-tray again to switch between the local model and a remote server.")
        if self.engine is None or self.load_error is not None or needs_load:
            self.load_error = None
            self._start_loader()
        elif new != old:
            engine = self.engine
            threading.Thread(target=engine.reconfigure, args=(new,), name="dotocr-reconfigure",
                             daemon=True).start()
        self._changed()

    def _reregister_hotkey(self) -> None:
        backend = self.services.hotkey
        if backend is not None:
            try:
                backend.unregister()
            except Exception:
                log.exception("Unregistering the old hotkey failed")
        self.register_hotkey()

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
            self.notify("Could not copy the text", _error_sentence(exc))
            return
        if copied:
            self.notify("Copied again", _preview(text))

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
                from dotocr.tray.autostart import default_tray_command

                backend.enable(default_tray_command(self.launch_flags))
        except Exception as exc:
            log.exception("Changing start at login failed")
            self.notify("Start at login was not changed", _error_sentence(exc))
        self._changed()

    def open_settings_file(self) -> None:
        """Create the file from the current file settings if it is missing, then open it."""
        settings_file = self.settings_file
        if settings_file is None:
            return
        path = settings_file.path
        if not path.exists() and not settings_file.save(self.file_settings):
            self.notify("Settings file not created", f"{path} could not be written.")
            return
        opener = self.services.open_file or open_with_os
        if not opener(path):
            self.notify("Settings file", f"Open {path} in a text editor, then choose Reload settings in the menu.")

    # -- local API -------------------------------------------------------------------------------

    @staticmethod
    def api_available() -> bool:
        try:
            from dotocr.server import start_background_server  # noqa: F401
        except Exception:
            return False
        return True

    def toggle_api(self) -> None:
        enabled = not self.settings.api_enabled
        self.change_settings(api_enabled=enabled)
        if enabled:
            self._start_api()
        else:
            self._stop_api()

    def _start_api(self) -> None:
        """Start the local API beside the tray on a worker thread (binding and start-up take a moment)."""
        threading.Thread(target=self._start_api_now, name="dotocr-api", daemon=True).start()

    def _start_api_now(self) -> None:
        with self._lock:
            if self.api_handle is not None or self.engine is None or not self.settings.api_enabled:
                return
            try:
                from dotocr.server import start_background_server

                self.api_handle = start_background_server(self.engine, self.settings.api_port)
            except Exception as exc:
                log.error("Starting the local API failed: %s", exc)
                self.notify("Local API not started", _error_sentence(exc))
        self._changed()

    def _stop_api(self) -> None:
        with self._lock:
            handle, self.api_handle = self.api_handle, None
        if handle is not None:
            try:
                handle.stop()
            except Exception:
                log.exception("Stopping the local API failed")
        self._changed()

    # -- last region -----------------------------------------------------------------------------

    def _remember_region(self, region: Any) -> None:
        self.last_region = region
        path = self.last_region_path
        if path is None:
            return
        try:
            write_atomic(path, json.dumps(region.to_dict()))
        except (OSError, AttributeError, TypeError):
            log.exception("Saving the last region failed")

    def _read_last_region(self) -> Any | None:
        path = self.last_region_path
        if path is None or not path.exists():
            return None
        try:
            from dotocr.capture import Region

            return Region.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except Exception:
            log.warning("Ignoring the unreadable last region in %s", path)
            return None

    # -- quit ------------------------------------------------------------------------------------

    def quit(self) -> None:
        """Menu Quit (Tk thread): the hotkey first (no capture can start), then the local API; app.py then
        stops the icon and, last, Tk."""
        if self._quitting:
            return
        self._quitting = True
        backend = self.services.hotkey
        if backend is not None:
            try:
                backend.unregister()
            except Exception:
                log.exception("Unregistering the hotkey failed")
        self._stop_api()
        if self.on_quit is not None:
            self.on_quit()


def _is_dotocr_error(exc: BaseException) -> bool:
    return isinstance(exc, DotOCRError)


def _differences(base: Settings, settings: Settings) -> dict[str, Any]:
    """The values `settings` has on top of `base`: the overrides, when the caller did not name them."""
    return {key: value for key, value in settings.to_dict().items() if getattr(base, key) != value}


def _error_sentence(exc: BaseException) -> str:
    """A DotOCRError already is one sentence; anything else is a bug, said plainly."""
    if _is_dotocr_error(exc):
        return str(exc)
    return f"Unexpected {type(exc).__name__}: {exc}. The log has the details."


def _preview(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
