"""The engine host: the one owner of the tray's engine and of everything tied to it.

It holds the engine (created once, on the loader thread), the loader thread, the state the icon, tooltip and
menu show, the GPU's facts and the local API server that shares the engine. The state is the engine's own
`EngineState`; the host makes one itself only while no engine exists yet or when something failed outside the
engine (creating it, an unexpected exception). Creating, reconfiguring, loading and unloading run on worker
threads, since each may wait for a running read (the engine's model lock); nothing here blocks the Tk thread.
Whether new settings change what runs is the engine's decision: its `reconfigure` compares resolved plans.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dotocr.config import Settings
from dotocr.engine import EngineState, Status
from dotocr.errors import DotOCRError, ModelUnavailableError
from dotocr.tray.choices import CudaFacts
from dotocr.tray.messages import error_sentence

if TYPE_CHECKING:
    from dotocr.engine import Engine

PROGRESS_REFRESH_S = 0.5
"""Progress updates (hundreds during a download or a GGUF conversion) redraw the icon at most this often."""

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, Callable[[EngineState], None]], "Engine"]

STARTING = EngineState(Status.LOADING, "starting the engine")
API_PACKAGES = ("dotocr.server", "fastapi", "uvicorn")


def probe_cuda() -> CudaFacts:
    """Ask PyTorch what the GPU can do. Imports torch, so it runs on the loader thread, for a local engine only."""
    try:
        import torch
    except ImportError:
        return CudaFacts(False)
    if not torch.cuda.is_available():
        return CudaFacts(False)
    return CudaFacts(True, bool(torch.cuda.is_bf16_supported()))


def api_available() -> bool:
    """Whether "Expose local API" can be offered: the server's packages are installed. Looked up, not
    imported, so the menu can ask on the way to the icon (importing the web framework takes most of a second)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in API_PACKAGES)
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


class EngineHost:
    def __init__(self, factory: EngineFactory, *, settings: Callable[[], Settings],
                 changed: Callable[[], None], notify: Callable[[str, str], None],
                 cuda_probe: Callable[[], CudaFacts] | None = None) -> None:
        self._factory = factory
        self._settings = settings
        """The tray's current settings, read at each attempt so a queued attempt uses the newest."""
        self._changed = changed
        self._notify = notify
        self._cuda_probe = cuda_probe or probe_cuda
        self._lock = threading.RLock()
        self._progress_shown = 0.0
        self._engine: Engine | None = None
        self._state: EngineState = STARTING
        self._last_plan: tuple[str, str] | None = None
        """What ran last (device, precision), kept while the model is out of memory."""
        self._applied: Settings | None = None
        self._cuda: CudaFacts | None = None
        self._loader: threading.Thread | None = None
        self._loading = False
        self._again: bool | None = None
        """A request that came while an attempt ran: None for none, else whether it must load a freed model."""
        self._attempted = threading.Event()
        """Set when the last requested attempt has ended (success or failure)."""
        self._api: Any | None = None
        self._stopped = False

    # -- what the tray shows -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def plan(self) -> tuple[str, str] | None:
        """The resolved (device, precision) that runs, or ran before the model was freed; None while unknown."""
        state = self._state
        if state.device and state.precision:
            return state.device, state.precision
        return self._last_plan

    @property
    def cuda(self) -> CudaFacts | None:
        """None until the loader thread asked (a remote engine never asks: no local GPU choice applies)."""
        return self._cuda

    @property
    def api_server(self) -> Any | None:
        """The running local API (its `stop()` closes the port), or None."""
        return self._api

    def _set_state(self, state: EngineState) -> None:
        previous, self._state = self._state, state
        if state.device and state.precision:
            self._last_plan = (state.device, state.precision)
        elif state.status is Status.ERROR:
            self._last_plan = None
        now = time.monotonic()
        if (previous is not None and previous.status is state.status and state.progress is not None
                and now - self._progress_shown < PROGRESS_REFRESH_S):
            return  # progress within the same step (a download, a GGUF written once): redraw at most 2 a second
        self._progress_shown = now
        self._changed()

    # -- loading -------------------------------------------------------------------------------------------

    def load(self, *, keep_freed: bool = False) -> None:
        """Create the engine (once), hand it the current settings and load it, on the loader thread; returns at
        once. With `keep_freed`, a model the person freed stays out of memory until the next capture."""
        with self._lock:
            if self._stopped:
                return
            self._attempted.clear()
            if self._loading:  # the running attempt is followed by one more, with the newest settings
                self._again = (self._again or False) or not keep_freed
                return
            self._loading = True
            self._loader = threading.Thread(target=self._load_loop, args=(not keep_freed,), name="dotocr-load",
                                            daemon=True)
            self._loader.start()

    def _load_loop(self, must_load: bool) -> None:
        while True:
            try:
                self._load_once(must_load)
            finally:
                with self._lock:
                    again, self._again = self._again, None
                    if again is None or self._stopped:
                        self._loading = False
                        self._attempted.set()
                        again = None
            if again is None:
                return
            must_load = again

    def _load_once(self, must_load: bool) -> None:
        settings = self._settings()
        try:
            engine = self._engine
            if engine is None:
                self._set_state(STARTING)
                engine = self._factory(settings, self._set_state)
                self._applied = settings
                with self._lock:
                    self._engine = engine
                self._cuda = CudaFacts(False) if settings.engine == "remote" else self._probe_cuda()
                self._changed()
                if settings.api_enabled:
                    self.start_api()
                engine.load()
                self._set_state(engine.state)
                return
            applied = self._applied
            if applied is not None and (applied.device, applied.precision) != (settings.device, settings.precision):
                self._last_plan = None  # what ran before says nothing about what this request will run
            freed = engine.state.status is Status.UNLOADED
            self._applied = settings
            engine.reconfigure(settings)  # waits here, not on the Tk thread, while a read runs
            if must_load or not freed:
                engine.load()  # nothing to do when the engine kept its model
            self._set_state(engine.state)  # the engine's word again, after any failure the host reported
        except Exception as exc:
            sentence = error_sentence(exc)
            log.error("Loading the model failed: %s", sentence, exc_info=not isinstance(exc, DotOCRError))
            self._set_state(EngineState(Status.ERROR, sentence))
            self._notify("The model could not be loaded", sentence)

    def _probe_cuda(self) -> CudaFacts:
        try:
            return self._cuda_probe()
        except Exception:
            log.exception("Checking for CUDA failed")
            return CudaFacts(False)

    def wait_loaded(self, timeout: float) -> bool:
        """For tests and callers that need the outcome: wait until the requested attempts have ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            loader = self._loader
            if loader is None:
                time.sleep(0.01)
                continue
            loader.join(max(0.0, deadline - time.monotonic()))
            if not loader.is_alive() and loader is self._loader:
                return True
        return False

    def engine_for_ocr(self, timeout: float = 600) -> Engine:
        """The engine, once created; a capture made during start-up waits for the attempt, a failed one is
        reported at once with its reason. While the loader thread hands the engine new settings (a menu change),
        the read waits for it, so it always reads with the settings the menu shows."""
        engine = self._engine
        if engine is not None and self._loading:
            self._attempted.wait(timeout)  # a model still loading would hold the read on its lock anyway
        if engine is None:
            if self._loader is None:
                self.load()
            if not self._attempted.wait(timeout=timeout):
                raise ModelUnavailableError("The OCR engine did not start within 10 minutes; see the log, then "
                                            "choose Retry loading the model in the tray menu.")
            engine = self._engine
        if engine is None:
            detail = self._state.detail if self._state.status is Status.ERROR else ""
            raise ModelUnavailableError(detail or "The OCR engine could not be started; the log has the details.")
        return engine

    def unload_in_background(self) -> None:
        """Menu "Free GPU memory": the engine waits for a running read, so on a worker thread."""
        engine = self._engine
        if engine is None:
            return

        def unload() -> None:
            try:
                engine.unload()
            except Exception:
                log.exception("Unloading the model failed")
            self._changed()

        threading.Thread(target=unload, name="dotocr-unload", daemon=True).start()

    # -- the local API ------------------------------------------------------------------------------------

    def start_api(self) -> None:
        """Serve the tray's engine on loopback, on a worker thread (binding and start-up take a moment); when
        no engine exists yet it starts right after the engine is created."""
        threading.Thread(target=self._start_api_now, name="dotocr-api", daemon=True).start()

    def _start_api_now(self) -> None:
        settings = self._settings()
        with self._lock:
            if self._api is not None or self._engine is None or not settings.api_enabled or self._stopped:
                return
            try:
                from dotocr.server import start_background_server

                self._api = start_background_server(self._engine, settings.api_port)
            except Exception as exc:
                log.error("Starting the local API failed: %s", exc)
                self._notify("Local API not started", error_sentence(exc))
        self._changed()

    def stop_api(self) -> None:
        with self._lock:
            handle, self._api = self._api, None
        if handle is not None:
            try:
                handle.stop()
            except Exception:
                log.exception("Stopping the local API failed")
        self._changed()

    def stop(self) -> None:
        """Quit: no further attempts, and the local API closes its port."""
        with self._lock:
            self._stopped = True
        self.stop_api()
