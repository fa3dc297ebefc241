"""What the routes share: the engine, its loading in the background, the generation gate, the limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from anyio import to_thread
from PIL import Image
from starlette.types import Receive

from dotocr import __version__
from dotocr.engine import OCRResult, Status, load_image, preparation_bytes
from dotocr.errors import DotOCRError

from .errors import ApiError, busy_error, engine_error, loading_error, timeout_error
from .gate import GateFull, GateTimeout, GenerationGate, StopGeneration, Ticket
from .limits import MIB, ServerLimits
from .pacing import Pacing
from .schemas import Health
from .uploads import inspect_image_bytes

log = logging.getLogger("dotocr.server")
T = TypeVar("T")

BYTES_NAME = "The image data"
"""How `load_image` names bytes in its messages."""
PREPARE_RESERVE_BYTES = 192 * MIB
"""Memory kept for the one image being prepared for the model (generations run one at a time): resizing any image
within the 67-megapixel limit, a strip's padding included, takes at most about 186 MiB."""


class ServerState:
    def __init__(self, engine: Any, limits: ServerLimits, *, load_on_start: bool) -> None:
        self.engine = engine
        self.limits = limits
        self.load_on_start = load_on_start
        self.gate = GenerationGate(limits.max_waiting)
        self.budget = MemoryBudget(limits.max_decoded_bytes,
                                   prepare_room=min(PREPARE_RESERVE_BYTES, limits.max_decoded_bytes // 4))
        self.pacing = Pacing(limits.retry_after_s)
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
            precision=engine_state.precision, decoder=engine_state.decoder,
            gguf_type=engine_state.gguf_type, engine=settings.engine,
            version=__version__)

    @property
    def model_name(self) -> str:
        return self.engine.settings.model

    @property
    def max_new_tokens(self) -> int:
        return self.engine.settings.max_new_tokens

    # -- requests -----------------------------------------------------------------------------------

    def admit(self) -> Ticket:
        """A place in line for one generation, or 503 busy at once. Taken once the request body is in."""
        self.check_ready()
        try:
            ticket = self.gate.admit(self.limits.request_timeout_s)
        except GateFull:
            raise busy_error(self.pacing.refused(self.gate.admitted)) from None
        self.pacing.admitted()
        return ticket

    def hold(self, ticket: Ticket, cost: int) -> None:
        """Reserve `cost` bytes of the decoded-image budget until the ticket is given back, or 503 busy."""
        if not self.budget.reserve(cost):
            raise ApiError(503, "The server is holding as many decoded images as its memory limit allows; try "
                           "again in a few seconds.", "busy",
                           {"Retry-After": str(self.pacing.refused(self.gate.admitted))})
        ticket.on_return(lambda: self.budget.release(cost))

    def precheck(self) -> ApiError | None:
        """Before a work request's body is read: 503 when it could not be served anyway."""
        try:
            self.check_ready()
        except ApiError as exc:
            return exc
        return busy_error(self.pacing.refused(self.gate.admitted)) if self.gate.full else None

    async def decode(self, ticket: Ticket, data: bytes, what: str, max_image_size: int | None) -> Image.Image:
        """Turn uploaded bytes into an image off the event loop, within the memory budget; 415/400/503.

        The header is read first (on a worker thread: even a header can be slow to parse) and the decoded
        size reserved from the budget before any pixel is decoded; the reservation lasts until the ticket
        is given back, so images waiting in line count too. What preparing it for the model will take (at
        `max_image_size`, a strip's padding included) must fit the room kept for the one generation running.
        """
        size, mode = await to_thread.run_sync(inspect_image_bytes, data, what)
        cost = decoded_cost(size, mode)
        work = preparation_bytes(*size, max_image_size) if 0 not in size else 0
        if cost > self.budget.holdable or work > self.budget.prepare_room:
            need, room = max((cost, self.budget.holdable), (work, self.budget.prepare_room),
                             key=lambda pair: pair[0] - pair[1])
            raise ApiError(400, f"{what} is {size[0]} x {size[1]} pixels, about {need // MIB} MiB once decoded "
                           f"and prepared, more than this server keeps for one image ({room // MIB} MiB); scale "
                           "it down.", "invalid_image")
        self.hold(ticket, cost)
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

    def stopped(self, ticket: Ticket) -> ApiError:
        if ticket.expired:
            return timeout_error(self.limits.request_timeout_s)
        return ApiError(499, "The client closed the connection; the generation was stopped.", "cancelled")

    def _timed(self, call: Callable[[], OCRResult]) -> OCRResult:
        """Run one generation and remember how long a finished one took (for Retry-After)."""
        started = time.monotonic()
        result = call()
        self.pacing.finished(time.monotonic() - started)
        return result

    async def run_ocr(self, ticket: Ticket, receive: Receive, image: Image.Image, **kwargs: Any) -> OCRResult:
        """One OCR call in line; its generation stops if the deadline passes or the client leaves.

        `receive` is the request's ASGI receive, its body already read: what it says next is that the
        client has gone.
        """
        def work() -> OCRResult:
            return self._timed(lambda: self.engine.ocr(image, should_stop=ticket.should_stop, **kwargs))

        try:
            result = await self.unless_gone(ticket, receive, ticket.run(work))
        except (GateTimeout, StopGeneration):
            raise self.stopped(ticket) from None
        if result.stop_reason == "cancelled":
            raise self.stopped(ticket)
        return result

    async def stream_ocr(self, ticket: Ticket, receive: Receive, image: Image.Image,
                         **kwargs: Any) -> Callable[[], AsyncIterator[str | OCRResult]]:
        """Start the generation and wait for its first piece, then hand back the stream of pieces.

        Everything that fails before the first piece (no turn before the deadline, the model cannot load,
        the GPU runs out of memory in prefill) is raised here, while the answer can still carry its status.
        The returned iterator yields text deltas and finally the OCRResult; later engine errors are raised
        from it, a deadline passing raises ApiError(504). Leaving it early stops the generation; so does
        the client leaving before the first piece (`receive` tells, as in `run_ocr`).
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        finished = object()

        def on_text(delta: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, delta)

        def work() -> OCRResult:
            return self._timed(lambda: self.engine.ocr(image, on_text=on_text, should_stop=ticket.should_stop,
                                                       **kwargs))

        async def next_piece() -> Any:
            try:
                return await asyncio.wait_for(pieces.get(), ticket.remaining())
            except asyncio.TimeoutError:
                ticket.time_out()
                raise timeout_error(self.limits.request_timeout_s) from None
            except asyncio.CancelledError:
                ticket.cancelled.set()
                raise

        def outcome() -> OCRResult:
            try:
                result = future.result()
            except StopGeneration:
                raise self.stopped(ticket) from None
            if result.stop_reason == "cancelled":
                raise self.stopped(ticket)
            return result

        async def begin() -> tuple[asyncio.Future[OCRResult], Any]:
            try:
                started = await ticket.start(work)
            except GateTimeout:
                raise self.stopped(ticket) from None
            started.add_done_callback(lambda _f: pieces.put_nowait(finished))
            return started, await next_piece()

        # once the first piece is here, the streaming response listens for the client leaving
        future, first = await self.unless_gone(ticket, receive, begin())
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


    async def unless_gone(self, ticket: Ticket, receive: Receive, work: Awaitable[T]) -> T:
        """`await work`, unless the client leaves first: then the work is cancelled (a waiting request leaves
        the line at once, a running one stops at the next token) and the answer is the client-gone error."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(_watch_disconnect(receive, ticket))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not task.done():
                ticket.cancelled.set()
                task.cancel()
        if task.cancelled() or not task.done():
            with contextlib.suppress(BaseException):
                await task
            raise self.stopped(ticket)
        return task.result()


async def _watch_disconnect(receive: Receive, ticket: Ticket) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    ticket.cancelled.set()


class MemoryBudget:
    """Bytes of decoded images the requests in flight may hold together (used on the event loop only), less
    `prepare_room`, kept for preparing the one image being read (the gate runs one generation at a time)."""

    def __init__(self, capacity: int, *, prepare_room: int = 0) -> None:
        self.capacity = capacity
        self.prepare_room = prepare_room
        self.used = 0

    @property
    def holdable(self) -> int:
        return self.capacity - self.prepare_room

    def reserve(self, amount: int) -> bool:
        if self.used + amount > self.holdable:
            return False
        self.used += amount
        return True

    def release(self, amount: int) -> None:
        self.used -= amount


def decoded_cost(size: tuple[int, int], mode: str) -> int:
    """Memory an image of `size` and `mode` takes while we hold it: the decoded source, its RGB copy
    (Pillow keeps 4 bytes a pixel) and the engine's own copy."""
    width, height = size
    source = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * (source + 8)
