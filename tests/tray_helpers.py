"""Shared pieces for the tray tests: the real engine wrapped so a test sees what it was given,
a notifier that records what it shows (and still shows it), the clipboard read back with xclip."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from dotocr.config import Settings
from dotocr.desktop.notification import get_notifier
from dotocr.engine import DotOCRInference, Engine, OCRResult, Status


def tiny_settings(model: Path, **changes: Any) -> Settings:
    """The golden tiny checkpoint on CPU in fp32 on the torch decoder (these tests are about the tray; the
    decoders have their own); few tokens so a capture takes well under a second."""
    base = Settings(model=str(model), device="cpu", precision="fp32", decoder="torch", max_new_tokens=8,
                    max_image_size=448)
    return base.replace(**changes)


class RecordingEngine(DotOCRInference):
    """The real engine; it remembers each image and result, and can be held at a gate to keep it busy.
    While held it owns the model lock, as a long read does, so load/unload/reconfigure wait for it."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.images: list[Image.Image] = []
        self.results: list[Any] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def ocr(self, image: Any, **kwargs: Any) -> Any:
        self.images.append(image.copy() if isinstance(image, Image.Image) else image)
        gate = self.gate
        if gate is None:
            self.entered.set()
            result = super().ocr(image, **kwargs)
        else:
            with self._model_lock:  # what a long read holds (re-entered by the real read below)
                self.entered.set()
                gate.wait(30)
                result = super().ocr(image, **kwargs)
        self.results.append(result)
        return result


class BlankEngine(RecordingEngine):
    """The real engine, but its answer is dropped: stands in for a model that read nothing, which the
    random-weight tiny checkpoint cannot be made to do on purpose."""

    def ocr(self, image: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(super().ocr(image, **kwargs), text=" \n")


class RecordingNotifier:
    """Forwards to the real notifier for this desktop and keeps (title, text) for the test to read."""

    def __init__(self, real: Any | None = None) -> None:
        self.real = real if real is not None else get_notifier()
        self.shown: list[tuple[str, str]] = []

    def notify(self, title: str, text: str) -> None:
        self.shown.append((title, text))
        self.real.notify(title, text)

    def titles(self) -> list[str]:
        return [title for title, _ in self.shown]


def xclip_read() -> str:
    done = subprocess.run(["xclip", "-selection", "clipboard", "-o"], capture_output=True, text=True,
                          timeout=5)
    return done.stdout if done.returncode == 0 else ""


def xclip_write(text: str) -> None:
    """Own the clipboard with xclip (it forks and keeps serving the text), like another app would."""
    subprocess.run(["xclip", "-selection", "clipboard", "-i"], input=text, text=True, timeout=5, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: xclip_read() == text, 5)


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.01) -> float:
    """Poll until `condition()` is truthy; return the seconds it took. Fails the test on timeout."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.perf_counter() - start


class SystemTray:
    """A minimal freedesktop system tray: owns the `_NET_SYSTEM_TRAY_S<n>` selection on a display and records
    when an icon asks to be docked (XEmbed's SYSTEM_TRAY_REQUEST_DOCK), then embeds that icon's window.

    Bare Xvfb has no tray, so without this pystray logs "Failed to dock icon" and nothing shows; with it the
    tray's icon really appears, and the time of the dock request is when it did (used to time start-up)."""

    REQUEST_DOCK = 0

    def __init__(self, display_name: str | None = None) -> None:
        from Xlib import X, display

        self._display = display.Display(display_name)
        screen = self._display.screen()
        self._window = screen.root.create_window(0, 0, 64, 64, 0, screen.root_depth,
                                                 event_mask=X.StructureNotifyMask)
        self._opcode = self._display.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
        selection = self._display.intern_atom(f"_NET_SYSTEM_TRAY_S{self._display.get_default_screen()}")
        self._window.set_selection_owner(selection, X.CurrentTime)
        self._display.sync()
        self.docked: list[tuple[float, int]] = []
        """(time.perf_counter() when the request came, the icon's window id), in order."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="system-tray", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        from Xlib import X

        while not self._stop.is_set():
            while self._display.pending_events():
                event = self._display.next_event()
                if event.type != X.ClientMessage or event.client_type != self._opcode:
                    continue
                _format, data = event.data
                if data[1] == self.REQUEST_DOCK:
                    self.docked.append((time.perf_counter(), int(data[2])))
                    icon = self._display.create_resource_object("window", int(data[2]))
                    icon.reparent(self._window, 0, 0)
                    icon.map()
                    self._display.flush()
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._display.close()

    def __enter__(self) -> SystemTray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlanEngine(Engine):
    """A fake engine for display-free unit tests of the tray's mediator. It resolves settings to a plan the way
    the real engine's contract says (an explicit device and precision run as asked, `auto` runs `auto_plan`),
    "loads" at once and reports the resolved plan, as the real engine does on hardware this machine lacks (a
    bf16 GPU, a small card where `auto` picks 4-bit). Its `reconfigure` unloads only when the resolved plan
    changes, as the real one does. It records every call, so a test sees what the tray asked of it."""

    def __init__(self, settings: Settings, *, on_state: Any = None, auto_plan: tuple[str, str] = ("cpu", "fp32"),
                 text: str = "fake text") -> None:
        super().__init__(settings, on_state=on_state)
        self.auto_plan = auto_plan
        self.text = text
        self.calls: list[str] = []
        self.reconfigured: list[Settings] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.RLock()
        self._running: tuple[str, str] | None = None

    def resolve(self, settings: Settings) -> tuple[str, str]:
        device = self.auto_plan[0] if settings.device == "auto" else settings.device
        if settings.precision != "auto":
            return device, settings.precision
        return device, self.auto_plan[1] if device == self.auto_plan[0] else "fp32"

    def load(self) -> None:
        with self._lock:
            self.calls.append("load")
            if self._running is None:  # like the real engine, silent when the model is in memory already
                self._set_state(Status.LOADING, "loading the fake model")
                self._running = self.resolve(self._settings)
                self.calls.append("loaded " + " ".join(self._running))
                self._set_ready()

    def _set_ready(self) -> None:
        assert self._running is not None
        self._set_state(Status.READY, "", device=self._running[0], precision=self._running[1], decoder="torch")

    def unload(self) -> None:
        with self._lock:
            self.calls.append("unload")
            self._running = None
            self._set_state(Status.UNLOADED, "model unloaded")

    def reconfigure(self, settings: Settings) -> None:
        with self._lock:  # waits for a read, as the real engine's model lock does
            self.calls.append("reconfigure")
            self.reconfigured.append(settings)
            self._settings = settings
            if self._running is not None and self.resolve(settings) != self._running:
                self.unload()

    def ocr(self, image: Any, **kwargs: Any) -> OCRResult:
        with self._lock:
            self.calls.append("ocr")
            self.entered.set()
            if self.gate is not None:
                self.gate.wait(30)
            self.load()
            self._set_ready()
            assert self._running is not None
            device, precision = self._running
            return OCRResult(text=self.text, raw=self.text, prompt=kwargs.get("prompt") or "text",
                             stop_reason="eos", width=image.width, height=image.height, image_tokens=1,
                             prompt_tokens=1, generated_tokens=1, device=device, precision=precision)


class FakeClipboard:
    """Display-free stand-in for the clipboard (the real one, xclip, runs in the Xvfb tests)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.copied: list[str] = []
        self.fail = fail

    def copy(self, text: str) -> bool:
        if self.fail is not None:
            raise self.fail
        if not text:
            return False
        self.copied.append(text)
        return True


class FakeNotifier:
    """Display-free notifier: keeps (title, text) and shows nothing."""

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def notify(self, title: str, text: str) -> None:
        self.shown.append((title, text))

    def titles(self) -> list[str]:
        return [title for title, _ in self.shown]


class ThrottledEngine(RecordingEngine):
    """The real engine with a TEST-ONLY decoder throttle: each decode step waits `step_s` in the engine's per-token
    `should_stop` hook, so the real decoder, pipeline and streaming all run and only the clock is slowed. A read
    of a tiny checkpoint then lasts long enough to watch it stream and to stop it. Records when each read returned
    (time.perf_counter())."""

    step_s = 0.12

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.returned_at: list[float] = []

    def ocr(self, image: Any, **kwargs: Any) -> Any:
        asked = kwargs.get("should_stop")

        def throttled() -> bool:
            time.sleep(self.step_s)
            return bool(asked is not None and asked())

        kwargs["should_stop"] = throttled
        try:
            return super().ocr(image, **kwargs)
        finally:
            self.returned_at.append(time.perf_counter())


SCRIPTED_TOKENS = (336, 469, 465, 431, 467, 468, 260, 432, 466, 13, 198, 481, 437, 11, 473, 304, 311, 436, 316, 464,
                   404, 438, 458, 312)
"""A chain of distinct tokens of the golden tokenizer: "The quick brown fox ..." (below)."""
SCRIPTED_TEXT = ("The quick brown fox jumps over the lazy dog.\n"
                 "Hello world, this text from each image and PDF within its layout")
ASSISTANT, END_OF_ANSWER = 1007, 1008


def save_reading_checkpoint(folder: Path, tokenizer_source: Path) -> Path:
    """A tiny checkpoint that answers SCRIPTED_TEXT for any picture (tests/tiny_models.save_scripted_checkpoint)."""
    from tests.tiny_models import save_scripted_checkpoint

    chain = (ASSISTANT, *SCRIPTED_TOKENS, END_OF_ANSWER)
    return save_scripted_checkpoint(folder, tokenizer_source, dict(zip(chain, chain[1:], strict=False)))
