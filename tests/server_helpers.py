"""Shared pieces of the server tests: a real server on a loopback port around a real engine.

The engine is the real `DotOCRInference` on the tiny checkpoint. Where a test needs to see or hold
what happens inside (loading that takes its time, a generation that is slow, the arguments a request
turned into), it uses a small subclass that adds the wait or the record and then calls the real code.
"""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from dotocr.config import Settings
from dotocr.engine import DotOCRInference
from dotocr.server import ServerLimits, start_background_server

PLACEHOLDER = "<|img|><|imgpad|><|endofimg|>"
TEXT_INSTRUCTION = "Extract the text content from this image."


def tiny_settings(folder: Path, **changes: Any) -> Settings:
    """CPU, fp32, a small image limit and few tokens: each OCR call takes a fraction of a second."""
    values: dict[str, Any] = {"model": str(folder), "device": "cpu", "precision": "fp32",
                              "max_image_size": 224, "max_new_tokens": 4}
    values.update(changes)
    return Settings(**values)


def png_bytes(size: tuple[int, int] = (160, 48), text: str = "Hello 42") -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((8, size[1] // 3), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def chat_messages(image: bytes, text: str = PLACEHOLDER + TEXT_INSTRUCTION) -> list[dict[str, Any]]:
    """What the official dots.ocr client sends: the image part, then the placeholder and the prompt."""
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": text}]}]


def wait_until_ready(url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/health", timeout=5).json()
        if health["status"] != "loading":
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"server still loading after {timeout} s: {health}")
        time.sleep(0.05)


class OpenAIStandIn(BaseHTTPRequestHandler):
    """The part every hand-scripted OpenAI-compatible server shares: one model listed at /v1/models, 404 for the
    rest of GET, a sender, and no request log. Subclasses answer POST."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            self._send(200, b'{"object": "list", "data": [{"id": "m", "owned_by": "someone"}]}')
        else:
            self._send(404, b'{"error": "not here"}')

    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def stand_in(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP server answering with `handler` on a free 127.0.0.1 port, on threads; yields its base URL.
    For servers that are not ours (a hostile one, Ollama, vLLM's answers), which tests script by hand."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def running_server(engine: Any, *, limits: ServerLimits | None = None, api_token: str | None = None,
                   wait: bool = True, load_on_start: bool = True) -> Iterator[str]:
    """A real uvicorn server on a free 127.0.0.1 port, on a thread; yields its base URL."""
    server = start_background_server(engine, 0, limits=limits, api_token=api_token,
                                     load_on_start=load_on_start)
    try:
        if wait:
            wait_until_ready(server.url)
        yield server.url
    finally:
        server.stop()


class RecordingEngine(DotOCRInference):
    """The real engine, remembering the arguments of each call (to check what a request became)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[dict[str, Any]] = []

    def ocr(self, image: Any, **kwargs: Any):  # type: ignore[override]
        self.calls.append(dict(kwargs, image_size=getattr(image, "size", None)))
        return super().ocr(image, **kwargs)


class HeldLoadEngine(DotOCRInference):
    """The real engine whose `load` first waits for `release` to be set: loading made observable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def load(self) -> None:
        assert self.release.wait(60), "test never released the load"
        super().load()


class HeldEngine(DotOCRInference):
    """The real engine whose generation waits for `release` before it starts (to fill the queue)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.started = 0

    def ocr(self, image: Any, **kwargs: Any):  # type: ignore[override]
        self.started += 1
        assert self.release.wait(60), "test never released the generation"
        return super().ocr(image, **kwargs)


class SlowEngine(DotOCRInference):
    """The real engine with `delay` seconds added to every decoded piece (a slow GPU, in effect)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = 0.0
        self.pieces = 0

    def ocr(self, image: Any, *, on_text: Any = None, **kwargs: Any):  # type: ignore[override]
        def slow_on_text(delta: str) -> None:
            self.pieces += 1
            time.sleep(self.delay)
            if on_text is not None:
                on_text(delta)

        return super().ocr(image, on_text=slow_on_text, **kwargs)
