"""Requests a web browser carries for a page: refused unless they come from this server's own origin.

A page on any site can make the browser POST to http://127.0.0.1:8765 (queueing jobs on a server without a
token), and a DNS-rebinding page can even read the answers, /health included. Browsers always say where such
a request comes from (Origin) and which name they think they talk to (Host); curl, scripts and OpenAI clients
send no Origin and the address itself as Host. So: on a loopback address only loopback names are accepted
as Host, and a request with an Origin is served only when that origin is this server itself (the API page).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback import is_loopback_host
from .errors import error_body, send_json


def _host_name(value: str) -> str:
    """The name in a Host header or an origin's netloc, without the port, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BrowserGuardMiddleware:
    """403 for a foreign Origin, and (on a loopback address) for a Host that is not a loopback name."""

    def __init__(self, app: ASGIApp, *, loopback: bool, bound_host: str) -> None:
        self.app = app
        self.loopback = loopback
        self.bound_host = _host_name(bound_host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        host_header = headers.get(b"host", b"").decode("latin-1").strip().lower()
        host = _host_name(host_header)
        problem = None
        if self.loopback and host and not (is_loopback_host(host) or host == self.bound_host):
            problem = (f"This server answers only to its loopback address, not to the name {host!r}; "
                       "use http://127.0.0.1.")
        origin = headers.get(b"origin")
        if problem is None and origin is not None and (
                not host_header or urlsplit(origin.decode("latin-1").strip().lower()).netloc != host_header):
                problem = ("Requests from web pages are refused: the Origin "
                           f"{origin.decode('latin-1')!r} is not this server.")
        if problem is not None:
            await send_json(send, 403, error_body(problem, "forbidden", 403), {"Connection": "close"})
            return
        await self.app(scope, receive, send)
