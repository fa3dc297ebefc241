"""How much one request may ask of the server, and the ASGI guard that enforces the body size.

The size guard sits in front of every route so no handler can read an unbounded body: a declared
Content-Length over the limit is refused before a byte is read, and a chunked body is counted while it
streams in and cut off the moment it passes the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body, send_json

MIB = 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for multipart headers and the small text fields next to the upload."""
CLOSE = {"Connection": "close"}
"""On a refused body: closing the connection stops the sender; otherwise it would be read to the end."""


@dataclass(frozen=True)
class ServerLimits:
    """The server's limits; `dotocr-serve` flags map onto these one to one."""

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

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_waiting < 0 or self.request_timeout_s <= 0:
            raise ValueError("limits must be positive (max_waiting may be 0)")

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


class BodySizeLimitMiddleware:
    """Refuses bodies over `ServerLimits.body_limit` with 413, without buffering them.

    Any answer given before the body was read to its end (413, but also 503 busy or 415) closes the
    connection: keeping it open would mean reading the rest of the body just to throw it away.
    """

    def __init__(self, app: ASGIApp, limits: ServerLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.body_limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_json(send, 413, error_body(too_large_message(limit), "request_too_large", 413), CLOSE)
            return

        received = 0
        rejected = False
        response_started = False
        body_done = not _has_body(scope, declared)

        async def guarded_receive() -> Message:
            nonlocal received, rejected, body_done
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    if not response_started:
                        await send_json(send, 413,
                                        error_body(too_large_message(limit), "request_too_large", 413), CLOSE)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return  # the 413 already went out; whatever the app answers now is dropped
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
            # The handler saw a disconnect because we cut the body off; the client has its 413.


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
