"""The tray's state machine: engine state, one OCR at a time, capture -> OCR -> clipboard -> toast.

Threads: hotkey, pystray and single-instance callbacks only `post()` work; the Tk thread runs it
in `drain()`. Model loading and OCR run on worker threads so the tray, hotkey and overlay stay
responsive. Nothing here imports torch or transformers at import time, so the tray starts at once.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from dotocr.config import Settings, SettingsFile
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
    ) -> None:
        self.settings = settings
        self.file_settings = file_settings if file_settings is not None else settings
        """What the settings file holds; menu changes go here too, CLI overrides never do."""
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
        self._engine_created = threading.Event()
        self._loader: threading.Thread | None = None
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
            backend.register(parse_hotkey(combo), lambda: self.post(self.capture))
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
        with self._lock:
            if self._loader is not None and self._loader.is_alive():
                self._reload_requested = True
                return
            self._reload_requested = False
            self._loader = threading.Thread(target=self._load_loop, name="dotocr-load", daemon=True)
            self._loader.start()

    def _load_loop(self) -> None:
        while True:
            self._load_once()
            with self._lock:
                if not self._reload_requested or self._quitting:
                    return
                self._reload_requested = False

    def _load_once(self) -> None:
        try:
            if self.engine is None:
                engine = self._engine_factory(self.settings, self._on_engine_state)
                with self._lock:
                    self.engine = engine
                    if self.engine_state is None:
                        self.engine_state = getattr(engine, "state", None)
                self._engine_created.set()
                self._update_cuda()
                if self.settings.api_enabled:
                    self._start_api()
            self.load_error = None
            self._changed()
            self.engine.load()  # type: ignore[union-attr]
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
        self.load_error = None
        self._changed()
        self._start_loader()

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
            log.exception("Opening the overlay failed")
            self.notify("Capture failed", f"The screen could not be captured ({exc}).")

    def _on_region_selected(self, region: Any, crop: Image.Image | None) -> None:
        self._selecting = False
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
            log.exception("Grabbing the last region failed")
            self.notify("Capture failed", f"The last region could not be grabbed again ({exc}).")
            return
        self.start_ocr(crop)

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
        if not self._engine_created.wait(timeout=600):
            raise TimeoutError("the engine did not start within 10 minutes")
        engine = self.engine
        assert engine is not None
        return engine.ocr(image, prompt=self.settings.prompt, output_format=self.settings.output_format)

    def _deliver(self, text: str, seconds: float, result: Any = None) -> None:
        from dotocr.tray.notification import summarize_result

        if not text.strip():
            self.notify(*summarize_result("", seconds))  # the clipboard keeps what it had
            return
        try:
            self.services.clipboard.copy(text)
        except Exception as exc:
            log.error("Copying to the clipboard failed: %s", exc)
            self.notify("Could not copy the text", _error_sentence(exc))
            return
        try:
            self.services.history.add(text, prompt=getattr(result, "prompt", self.settings.prompt))
        except Exception:
            log.exception("Saving the result to the history failed")
        self.notify(*summarize_result(text, seconds))
        self._changed()

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
        engine = self.engine
        if engine is not None:
            engine.reconfigure(self.settings)
        self.load_error = None
        self._start_loader()

    def output_choice(self) -> str:
        return "markdown" if self.settings.prompt == "layout" else "text"

    def set_output(self, choice: str) -> None:
        _label, prompt, output_format = OUTPUT_CHOICES[choice]
        self.change_settings(prompt=prompt, output_format=output_format)

    def change_settings(self, **changes: Any) -> bool:
        """Apply a menu change for this run and save it; CLI overrides of other items stay out of the file."""
        self.settings = self.settings.replace(**changes)
        self.file_settings = self.file_settings.replace(**changes)
        saved = True
        if self.settings_file is not None:
            saved = self.settings_file.update(changes)
            if not saved and not self._save_warned:
                self._save_warned = True
                self.notify("Settings not saved", f"The settings file {self.settings_file.path} could not be "
                            "read or written, so menu changes last until you quit; fix the file to keep them.")
        self._changed()
        return saved

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
            self.notify("Settings file", f"Open {path} in a text editor; changes apply after a restart.")

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
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(region.to_dict()), encoding="utf-8")
            os.replace(tmp, path)
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
        """Menu Quit (Tk thread): stop timers, the API and the hotkey; app.py then stops icon and Tk."""
        if self._quitting:
            return
        self._quitting = True
        self._stop_api()
        backend = self.services.hotkey
        if backend is not None:
            try:
                backend.unregister()
            except Exception:
                log.exception("Unregistering the hotkey failed")
        if self.on_quit is not None:
            self.on_quit()


def _is_dotocr_error(exc: BaseException) -> bool:
    return any(cls.__name__ == "DotOCRError" for cls in type(exc).__mro__)


def _error_sentence(exc: BaseException) -> str:
    """A DotOCRError already is one sentence; anything else is a bug, said plainly."""
    if _is_dotocr_error(exc):
        return str(exc)
    return f"Unexpected {type(exc).__name__}: {exc}. The log has the details."


def _preview(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
