"""How much one request may ask of the server, and the ASGI guard that enforces it on the request body.

The body guard sits in front of every route so no handler can read an unbounded or endless body: a declared
Content-Length over the limit is refused before a byte is read, a chunked body is counted while it streams
in and cut off the moment it passes the limit, and a body that arrives too slowly is cut off with 408. On the
two work routes it also refuses at once (503, no body read) when the model is loading or its line is full,
and it caps how many bodies are read at the same time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .errors import ApiError

MIB = 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for multipart headers and the small text fields next to the upload."""
CLOSE = {"Connection": "close"}
"""On a refused body: closing the connection stops the sender; otherwise it would be read to the end."""


@dataclass(frozen=True)
class ServerLimits:
    """The server's limits; most have a `dotocr-serve` flag of the same meaning (see docs/server.md)."""

    max_upload_bytes: int = 20 * MIB
    """Largest image file accepted by POST /ocr (a base64 image in a chat request may be 4/3 of this)."""
    max_waiting: int = 128
    """Requests allowed to wait behind the one being generated; more are refused with 503. The official parser
    sends 16 pages at once (64 recommended for PDFs); vLLM queues them all, so the line holds that and more."""
    request_timeout_s: float = 3600.0
    """Longest a request may take, queueing included, before it gets 504 and its generation is stopped: long
    enough for a line of dense pages on a slow machine (a page on a CPU can take minutes)."""
    retry_after_s: int = 5
    """What 503 answers put in Retry-After before any generation has finished (then: recent durations)."""
    max_body_bytes_other: int = 64 * 1024
    """Body limit for every route that takes no image."""
    max_connections: int = 100
    """Open connections at most (lowered to fit the open-file limit); a new one pushes out the oldest idle one."""
    header_timeout_s: float = 10.0
    """A connection must deliver a request's headers within this; otherwise it is closed."""
    body_timeout_s: float = 60.0
    """A request body must be complete within this, however fast it arrives (408 otherwise)."""
    body_grace_s: float = 5.0
    """Time a body may take before `min_body_rate` applies."""
    min_body_rate: int = 32 * 1024
    """Bytes a second a body must average after the grace time (408 otherwise): a trickle is cut off."""
    max_bodies: int = 64
    """Bodies of /ocr and chat requests read at the same time; more are refused with 503 (the official parser
    sends 64 pages at once for PDFs)."""
    max_decoded_bytes: int = 3072 * MIB
    """Memory the decoded images of all requests in flight may take (about 8 bytes a pixel each): room for the
    official parser's 64 A4 pages at 200 DPI, about 46 MiB each."""
    max_prompt_tokens: int = 4096
    """Tokens the text parts of a chat request may take (the image's tokens not counted)."""
    render_timeout_s: float = 60.0
    """Longest an uploaded PDF may take to open, or one of its pages to render, before its renderer is killed."""
    render_memory_bytes: int = 768 * MIB
    """Memory a PDF's renderer may take (its process's address space on Linux), counted in the decoded-image
    budget for as long as the upload is read."""

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_waiting < 0 or self.request_timeout_s <= 0:
            raise ValueError("limits must be positive (max_waiting may be 0)")
        if min(self.max_connections, self.max_bodies, self.max_decoded_bytes, self.max_prompt_tokens,
               self.min_body_rate, self.render_memory_bytes) < 1 \
                or min(self.header_timeout_s, self.body_timeout_s, self.render_timeout_s) <= 0 \
                or self.body_grace_s < 0:
            raise ValueError("connection, body, memory and prompt limits must be positive")

    @staticmethod
    def is_work(scope: Scope) -> bool:
        """The routes that queue for the model and take an image body."""
        path = scope["path"]
        return scope.get("method") == "POST" and (path == "/ocr" or path.startswith("/v1/chat/completions"))

    def body_limit(self, path: str) -> int:
        """Most bytes a request body to `path` may carry."""
        if path == "/ocr":
            return self.max_upload_bytes + FORM_OVERHEAD_BYTES
        if path.startswith("/v1/chat/completions"):
            return (self.max_upload_bytes * 4) // 3 + FORM_OVERHEAD_BYTES
        return self.max_body_bytes_other


def too_large_message(limit: int) -> str:
    return (f"The request body is larger than this server accepts ({_human(limit)}); "
            "send a smaller image or raise --max-upload-mb.")


def _human(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.0f} KiB"


class BodyGuardMiddleware:
    """Refuses bodies over `ServerLimits.body_limit` (413) or too slow (408), without buffering them.

    `precheck` is asked before a work route's body is read; an ApiError it returns is the answer (503
    loading or busy). Any answer given before the body was read to its end closes the connection: keeping it
    open would mean reading the rest of the body just to throw it away (the connection layer discards what
    the client still sends for a moment, so the client reads the answer rather than a reset).
    """

    def __init__(self, app: ASGIApp, limits: ServerLimits,
                 precheck: Callable[[], ApiError | None] = lambda: None) -> None:
        self.app = app
        self.limits = limits
        self.precheck = precheck
        self.reading = 0
        """Work-route bodies being read now."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .errors import busy_error, error_body, send_json  # here, not at the top: `dotocr-serve --help` reads the
        # defaults above and must not pay for the web framework the error bodies need

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        limit = limits.body_limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_json(send, 413, error_body(too_large_message(limit), "request_too_large", 413), CLOSE)
            return
        body_done = not _has_body(scope, declared)
        slot = False
        if limits.is_work(scope):
            refusal = self.precheck()
            if refusal is None and not body_done and self.reading >= limits.max_bodies:
                refusal = busy_error(limits.retry_after_s)
            if refusal is not None:
                status = refusal.status
                await send_json(send, status, error_body(refusal.message, refusal.kind, status),
                                {**refusal.headers, **CLOSE})
                return
            if not body_done:
                slot = True
                self.reading += 1

        received = 0
        rejected = False
        response_started = False
        started = time.monotonic()

        def release() -> None:
            nonlocal slot
            if slot:
                slot = False
                self.reading -= 1

        async def refuse(status: int, message: str, kind: str) -> Message:
            nonlocal rejected
            rejected = True
            release()
            if not response_started:
                await send_json(send, status, error_body(message, kind, status), CLOSE)
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if rejected:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body: only the disconnect is left to hear
            allowed = min(started + limits.body_grace_s + received / limits.min_body_rate,
                          started + limits.body_timeout_s) - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(allowed, 0.001))
            except asyncio.TimeoutError:
                return await refuse(408, slow_body_message(limits), "request_timeout")
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    return await refuse(413, too_large_message(limit), "request_too_large")
                if body_done:
                    release()
            else:
                body_done = True
                release()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return  # the 413/408 already went out; whatever the app answers now is dropped
            if message["type"] == "http.response.start":
                response_started = True
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not rejected:
                raise
            # The handler saw a disconnect because we cut the body off; the client has its 413 or 408.
        finally:
            release()


def slow_body_message(limits: ServerLimits) -> str:
    return (f"The request body arrived too slowly (it must be complete within {limits.body_timeout_s:g} s and, "
            f"after the first {limits.body_grace_s:g} s, average {_human(limits.min_body_rate)}/s); "
            "send it in one go.")


def _has_body(scope: Scope, declared: int | None) -> bool:
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _value in scope.get("headers", ()))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
