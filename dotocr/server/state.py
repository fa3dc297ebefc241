"""What the routes share: the engine, its loading in the background, the generation gate, the limits."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from anyio import to_thread
from PIL import Image

from dotocr import __version__
from dotocr.engine import OCRResult, Status, load_image
from dotocr.errors import DotOCRError

from .errors import busy_error, engine_error, loading_error, timeout_error
from .gate import GateFull, GateTimeout, GenerationGate, StopGeneration, Ticket
from .limits import ServerLimits
from .memory import PixelBudget
from .pacing import Pacing
from .schemas import Health
from .uploads import check_image_bytes

log = logging.getLogger("dotocr.server")

BYTES_NAME = "The image data"
"""How `load_image` names bytes in its messages."""


class ServerState:
    def __init__(self, engine: Any, limits: ServerLimits, *, load_on_start: bool) -> None:
        self.engine = engine
        self.limits = limits
        self.load_on_start = load_on_start
        self.gate = GenerationGate(limits.max_waiting)
        self.pacing = Pacing(limits.retry_after_s)
        self.pixels = PixelBudget()
        self.loading = False
        self._loader: threading.Thread | None = None

    # -- loading ------------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the model on a thread so the server answers (503 "loading", /health) meanwhile."""
        if not self.load_on_start:
            return
        self.loading = True
        self._loader = threading.Thread(target=self._load, name="dotocr-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        try:
            self.engine.load()
        except DotOCRError as exc:  # the engine's state says "error" with the sentence; /health shows it
            log.error("The model could not be loaded: %s", exc)
        except Exception:  # an engine must raise nothing else; if one does, the server stays up
            log.exception("loading failed")
        finally:
            self.loading = False

    def check_ready(self) -> None:
        """503 while the model loads.

        A failed load does not block requests: each one asks the engine again, which tries to load again
        and answers with its sentence (503 model_unavailable, 502 for a remote server), so the server
        recovers by itself once the cause is fixed (a remote server comes up, settings change in the tray).
        """
        if self.loading or self.engine.state.loading:
            raise loading_error(self.limits.retry_after_s)

    def health(self) -> Health:
        engine_state = self.engine.state
        if engine_state.status == Status.ERROR:
            status = "error"
        elif self.loading or engine_state.loading:
            status = "loading"
        else:
            status = "ready"  # "unloaded" too: the engine loads again on the next request
        settings = self.engine.settings
        return Health(
            status=status, detail=engine_state.detail, engine_state=engine_state.status.value,
            progress=engine_state.progress, model=self.model_name, device=engine_state.device,
            precision=engine_state.precision, decoder=engine_state.decoder, engine=settings.engine,
            version=__version__)

    @property
    def model_name(self) -> str:
        return self.engine.settings.model

    @property
    def max_new_tokens(self) -> int:
        return self.engine.settings.max_new_tokens

    # -- requests -----------------------------------------------------------------------------------

    def admit(self) -> Ticket:
        """A place in line for one generation, or 503 busy at once."""
        self.check_ready()
        try:
            ticket = self.gate.admit(self.limits.request_timeout_s)
        except GateFull:
            raise busy_error(self.pacing.refused(self.gate.admitted)) from None
        self.pacing.admitted()
        return ticket

    def hold_pixels(self, pixels: int) -> Callable[[], None]:
        """Reserve room for a decoded image in the waiting room (see memory.py), or 503 busy; returns the release."""
        release = self.pixels.reserve(pixels)
        if release is None:
            raise busy_error(self.pacing.refused(self.gate.admitted)) from None
        return release

    async def decode(self, data: bytes, what: str) -> Image.Image:
        """Turn uploaded bytes into an image off the event loop; 415/400 before the request queues."""
        check_image_bytes(data, what)
        try:
            return await to_thread.run_sync(load_image, data)
        except DotOCRError as exc:
            error = engine_error(exc, self.limits.retry_after_s)
            if error.message.startswith(BYTES_NAME):  # name the upload rather than "the image data"
                error.message = what + error.message[len(BYTES_NAME):]
            raise error from None

    def clamp_tokens(self, requested: int | None) -> int:
        """The request's token cap, never above the server's setting (the official parser asks for 16k)."""
        return min(requested or self.max_new_tokens, self.max_new_tokens)

    def _timed(self, call: Callable[[], OCRResult]) -> OCRResult:
        """Run one generation and remember how long a finished one took (for Retry-After)."""
        started = time.monotonic()
        result = call()
        self.pacing.finished(time.monotonic() - started)
        return result

    async def run_ocr(self, ticket: Ticket, image: Image.Image, **kwargs: Any) -> OCRResult:
        """One OCR call in line; its generation stops if the deadline passes or the client leaves."""
        def work() -> OCRResult:
            return self._timed(lambda: self.engine.ocr(image, on_text=lambda _delta: ticket.check(), **kwargs))

        try:
            return await ticket.run(work)
        except (GateTimeout, StopGeneration):
            raise timeout_error(self.limits.request_timeout_s) from None

    async def stream_ocr(self, ticket: Ticket, image: Image.Image,
                         **kwargs: Any) -> Callable[[], AsyncIterator[str | OCRResult]]:
        """Start the generation and wait for its first piece, then hand back the stream of pieces.

        Everything that fails before the first piece (no turn before the deadline, the model cannot load,
        the GPU runs out of memory in prefill) is raised here, while the answer can still carry its status.
        The returned iterator yields text deltas and finally the OCRResult; later engine errors are raised
        from it, a deadline passing raises ApiError(504). Leaving it early stops the generation.
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        finished = object()

        def on_text(delta: str) -> None:
            ticket.check()
            loop.call_soon_threadsafe(pieces.put_nowait, delta)

        def work() -> OCRResult:
            return self._timed(lambda: self.engine.ocr(image, on_text=on_text, **kwargs))

        async def next_piece() -> Any:
            try:
                return await asyncio.wait_for(pieces.get(), ticket.remaining())
            except asyncio.TimeoutError:
                ticket.cancelled.set()
                raise timeout_error(self.limits.request_timeout_s) from None
            except asyncio.CancelledError:
                ticket.cancelled.set()
                raise

        def outcome() -> OCRResult:
            try:
                return future.result()
            except StopGeneration:
                raise timeout_error(self.limits.request_timeout_s) from None

        try:
            future = await ticket.start(work)
        except GateTimeout:
            raise timeout_error(self.limits.request_timeout_s) from None
        future.add_done_callback(lambda _f: pieces.put_nowait(finished))
        first = await next_piece()
        if first is finished:
            outcome()  # raises the engine's error, if there was one

        async def iterate() -> AsyncIterator[str | OCRResult]:
            try:
                item = first
                while item is not finished:
                    yield item
                    item = await next_piece()
                yield outcome()
            finally:
                if not future.done():
                    ticket.cancelled.set()

        return iterate
