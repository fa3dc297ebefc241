"""Connection-level guards, below the app: header deadline, connection cap, lingering close, log-once accept errors.

uvicorn times out an idle keep-alive connection only after a response; a connection that never finishes its
headers is kept forever, and it accepts until descriptors run out. This protocol (uvicorn's h11 protocol
with four additions) makes every connection finish its request headers within `header_timeout_s`, keeps at
most `max_connections` open (a new one first pushes out the oldest connection that is only waiting for
headers, so idle sockets cannot lock out real clients), and closes a connection whose client is still
sending a body by half-closing first and discarding what still arrives for a moment (at most `LINGER_S` and
about one largest body): the client reads its answer (a 503 or 413) instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("dotocr.server")

LINGER_S = 2.0
"""How long a closing connection keeps discarding the rest of a body the client is still sending."""
FD_RESERVE = 64
"""Descriptors kept free for the model, logs and files when the connection cap follows the descriptor limit."""
RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def descriptor_limit() -> int | None:
    """The soft limit on open files, where the platform has one."""
    if sys.platform == "win32":
        return None
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(configured: int) -> int:
    """`configured`, lowered so the open connections always leave descriptors for everything else."""
    limit = descriptor_limit()
    if limit is None:
        return configured
    return max(8, min(configured, (limit - FD_RESERVE) // 2))


class ConnectionTable:
    """The open connections of one server, oldest first."""

    def __init__(self, max_connections: int, header_timeout_s: float, linger_bytes: int) -> None:
        self.max_connections = connection_cap(max_connections)
        self.header_timeout_s = header_timeout_s
        self.linger_bytes = linger_bytes
        """The most a closing connection discards: a body larger than any route takes is cut off, not read."""
        self.open: dict[GuardedH11Protocol, float] = {}
        self.refused = 0
        self.evicted = 0

    def admit(self, new: GuardedH11Protocol) -> bool:
        """Room for `new`: True, after pushing out the oldest idle connection if the table was full."""
        if len(self.open) >= self.max_connections:
            idle = next((c for c in self.open if c.waiting_for_headers), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            idle.drop()
        self.open[new] = time.monotonic()
        return True


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the header deadline, the connection table and lingering close."""

    table: ConnectionTable  # set on the subclass `protocol_class` makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = False
        self._discarded = 0
        self._linger_timer: asyncio.TimerHandle | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: Any = None
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        if not self.table.admit(self):
            self.connections.discard(self)
            transport.abort()  # no room and nobody idle to push out: every slot is doing real work
            return
        self._arm_header_timer()

    @property
    def waiting_for_headers(self) -> bool:
        """Between requests or inside the headers: nothing the app works on would be lost by closing."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.table.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        if self.waiting_for_headers and not self.transport.is_closing():
            self.drop()

    def drop(self) -> None:
        """Close a connection that has no request in progress."""
        self._cancel_header_timer()
        self.table.open.pop(self, None)
        with _suppress_h11():
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen_cycle:  # a request's headers are in
            self._seen_cycle = self.cycle
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers, too, must arrive in time

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # the rest of a body nobody will read
            self._discarded += len(data)
            if self._discarded > self.table.linger_bytes:
                self._really_close()
            return
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._lingering:
            self._really_close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.table.open.pop(self, None)
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    # -- lingering close --------------------------------------------------------------------------------

    def close_transport(self, real: asyncio.Transport) -> None:
        """Called for `transport.close()`: linger when the client may still be sending its body."""
        if self._lingering or real.is_closing():
            return
        if self.conn.their_state is not h11.SEND_BODY or not real.can_write_eof():
            real.close()
            return
        self._lingering = True
        self.table.open.pop(self, None)
        real.write_eof()  # our answer, then FIN: the client reads it while we discard its body
        real.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_S, self._really_close)

    def _really_close(self) -> None:
        real = self.transport.real  # type: ignore[attr-defined]
        if not real.is_closing():
            real.close()


class _LingeringTransport:
    """The transport uvicorn sees: everything passes through but `close`, which may linger first."""

    def __init__(self, real: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self.real = real
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_transport(self.real)

    def is_closing(self) -> bool:
        return self._protocol._lingering or self.real.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _suppress_h11:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> bool:
        return kind is not None and issubclass(kind, h11.LocalProtocolError)


def protocol_class(table: ConnectionTable) -> type[GuardedH11Protocol]:
    """A protocol class bound to one server's connection table (uvicorn's `http=` setting)."""
    return type("DotOCRProtocol", (GuardedH11Protocol,), {"table": table})


class AcceptErrorLog:
    """The event loop's exception handler: an accept that fails for lack of descriptors is logged once a minute.

    asyncio retries the accept every second and reports each failure; under a flood of connections that is
    a traceback per second or worse. Everything else goes to the default handler.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.suppressed = 0
        self._last = -float("inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            now = time.monotonic()
            if now - self._last >= self.every_s:
                more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
                log.error("Out of file descriptors or memory for new connections (%s); refusing them until "
                          "some close%s. Raise the open-file limit (ulimit -n) or lower --max-connections.",
                          exc.strerror or exc, more)
                self._last = now
                self.suppressed = 0
            else:
                self.suppressed += 1
            return
        loop.default_exception_handler(context)
