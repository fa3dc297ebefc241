"""The HTTP app: the warm model for curl, scripts and OpenAI clients (dots.ocr's own parser too).

The model loads in the background, so the server answers at once: /health says "loading" and work requests
get 503 until it is ready. The console script is `main.py`; putting the app on a socket is `serving.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Header, Request

from dotocr import __version__
from dotocr.local_secret import CHALLENGE_HEADER, MAX_CHALLENGE, load_or_create_secret, proof
from dotocr.loopback import LOOPBACK_ADDRESS, is_loopback_host

from .auth import BearerTokenMiddleware
from .browser import BrowserGuardMiddleware
from .errors import install_exception_handlers
from .limits import BodyGuardMiddleware, ServerLimits
from .ocr_api import router as ocr_router
from .openai_api import router as openai_router
from .schemas import Health
from .state import ServerState

log = logging.getLogger("dotocr.server")


def create_app(engine: Any, *, api_token: str | None = None, limits: ServerLimits = ServerLimits(),
               load_on_start: bool = True, host: str = LOOPBACK_ADDRESS, docs: bool = False) -> FastAPI:
    """The HTTP app around one engine (local `DotOCRInference` or `RemoteEngine`).

    `load_on_start` loads the model on a thread when the app starts; with False the engine loads on the
    first request (or is loaded by its owner, as in the tray). With `api_token`, every route but /health
    needs `Authorization: Bearer <api_token>`. `host` is the address it is served on (a loopback one
    answers only to loopback names). `docs` serves the interactive API page at /docs, whose scripts come
    from a CDN; /openapi.json is always there.
    """

    state = ServerState(engine, limits, load_on_start=load_on_start)
    try:
        secret = load_or_create_secret()
    except OSError as exc:  # a data folder we cannot write: serve on, but no CLI will trust this server
        log.warning("The server secret could not be stored (%s); `dotocr ocr` will not use this server.", exc)
        secret = os.urandom(32)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            state.gate.close()

    app = FastAPI(title="dotocr", version=__version__, lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url=None,
                  description="Local OCR on the dots.ocr model: POST /ocr for uploads, /v1 for OpenAI "
                  "clients.")
    app.state.dotocr = state
    install_exception_handlers(app, limits.retry_after_s)
    app.include_router(ocr_router)
    app.include_router(openai_router)

    @app.get("/health", response_model=Health, summary="Whether the model is loading, ready or failed")
    async def health(request: Request, challenge: str | None = Header(
            default=None, alias=CHALLENGE_HEADER, max_length=MAX_CHALLENGE,
            description="Any text; the answer's `proof` shows the server knows this user's secret.")) -> Health:
        answer = state.health()
        if challenge is not None:
            answer.proof = proof(secret, challenge, (request.scope.get("server") or ("", 0))[1])
        return answer

    app.add_middleware(BodyGuardMiddleware, limits=limits, precheck=state.precheck)
    if api_token:
        app.add_middleware(BearerTokenMiddleware, token=api_token)  # no body read without it
    app.add_middleware(BrowserGuardMiddleware, loopback=is_loopback_host(host), bound_host=host)  # outermost
    return app
