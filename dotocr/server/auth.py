"""The bearer-token check: every route but /health, when the server was given a token."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_body, send_json

OPEN_PATHS = frozenset({"/health"})


class BearerTokenMiddleware:
    """Refuses requests without `Authorization: Bearer <token>` before any body is read."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", ()) if name == b"authorization"), b"")
        scheme, _, credentials = given.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(), self._expected):
            message = ("This server needs an API token: send the header 'Authorization: Bearer <token>' "
                       "with the token it was started with." if not given else "The API token is wrong.")
            await send_json(send, 401, error_body(message, "unauthorized", 401),
                            {"WWW-Authenticate": "Bearer", "Connection": "close"})
            return
        await self.app(scope, receive, send)
