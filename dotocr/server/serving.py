"""Putting the app on a socket: in the foreground for `dotocr-serve`, on a thread for the tray and tests.

The socket is bound here rather than by uvicorn so a taken port is one clear sentence, raised before
anything starts, and port 0 (any free port) reports the port it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

from ..loopback import LOOPBACK_ADDRESS, is_loopback_host
from .app import create_app
from .connections import AcceptErrorLog, ConnectionTable, protocol_class
from .limits import ServerLimits


class ServerStartError(RuntimeError):
    """The server could not start; the message says why and what to do."""


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        raise ServerStartError(f"{host!r} is not an address this machine can listen on; use 127.0.0.1 "
                               "(this machine only) or 0.0.0.0 (every network).") from None
    sock = socket.socket(family, kind, proto)
    if sys.platform == "win32":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServerStartError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); another program (another dotocr-serve, "
            "or the tray's API) may be using the port: stop it or choose another with --port.") from None
    sock.setblocking(False)
    return sock


def make_server(app: Any, *, limits: ServerLimits, log_level: str = "info",
                log_config: Any = uvicorn.config.LOGGING_CONFIG, **config: Any) -> uvicorn.Server:
    """uvicorn with our connection guard (header deadline, connection cap, lingering close)."""
    table = ConnectionTable(limits.max_connections, limits.header_timeout_s,
                            linger_bytes=limits.body_limit("/v1/chat/completions"))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, log_config=log_config,
                                           http=protocol_class(table), timeout_keep_alive=5, **config))
    server.connection_table = table  # type: ignore[attr-defined]
    return server


async def serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run `server` on `sock`; accept errors for lack of descriptors are logged once a minute, not per try."""
    asyncio.get_running_loop().set_exception_handler(AcceptErrorLog())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QueryRedactor) for f in access.filters):
        access.addFilter(QueryRedactor())
    await server.serve(sockets=[sock])


class QueryRedactor(logging.Filter):
    """The access log shows the path without its query: a token someone put there must not land in a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?...", *args[3:])
        return True


class BackgroundServer:
    """A server running on a daemon thread; `stop()` ends it and waits for the thread."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)


def start_background_server(engine: Any, port: int, *, host: str = LOOPBACK_ADDRESS, api_token: str | None = None,
                            limits: ServerLimits | None = None, load_on_start: bool = True,
                            startup_timeout: float = 15.0) -> BackgroundServer:
    """Serve `engine` on a thread (the tray's "Expose local API"). Port 0 picks a free port.

    Raises ServerStartError with one sentence when the port is taken or the server does not come up.
    """
    if not is_loopback_host(host) and not api_token:
        raise ServerStartError(f"Listening on {host} would expose the model to the network; "
                               "give an API token.")
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    limits = limits or ServerLimits()
    app = create_app(engine, api_token=api_token, limits=limits, load_on_start=load_on_start, host=host)
    server = make_server(app, limits=limits, log_level="warning", log_config=None)

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits this way when startup fails
            asyncio.run(serve(server, sock))

    thread = threading.Thread(target=run, name=f"dotocr-serve-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ServerStartError(f"The local API on port {bound_port} did not start; see the log.")
        time.sleep(0.01)
    return BackgroundServer(server, thread, host, bound_port)
