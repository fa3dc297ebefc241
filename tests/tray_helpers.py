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
from dotocr.engine import DotOCRInference
from dotocr.tray.notification import get_notifier


def tiny_settings(model: Path, **changes: Any) -> Settings:
    """The golden tiny checkpoint on CPU in fp32; few tokens so a capture takes well under a second."""
    base = Settings(model=str(model), device="cpu", precision="fp32", max_new_tokens=8, max_image_size=448)
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
