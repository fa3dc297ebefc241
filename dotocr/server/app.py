"""The HTTP app: the warm model for curl, scripts and OpenAI clients (dots.ocr's own parser too).

The model loads in the background, so the server answers at once: /health says "loading" and work requests
get 503 until it is ready. The console script is `main.py`; putting the app on a socket is `serving.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from dotocr import __version__

from .auth import BearerTokenMiddleware
from .errors import install_exception_handlers
from .limits import BodySizeLimitMiddleware, ServerLimits
from .ocr_api import router as ocr_router
from .openai_api import router as openai_router
from .schemas import Health
from .state import ServerState


def create_app(engine: Any, *, api_token: str | None = None, limits: ServerLimits = ServerLimits(),
               load_on_start: bool = True) -> FastAPI:
    """The HTTP app around one engine (local `DotOCRInference` or `RemoteEngine`).

    `load_on_start` loads the model on a thread when the app starts; with False the engine loads on the
    first request (or is loaded by its owner, as in the tray). With `api_token`, every route but /health
    needs `Authorization: Bearer <api_token>`.
    """
    state = ServerState(engine, limits, load_on_start=load_on_start)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            state.gate.close()

    app = FastAPI(title="dotocr", version=__version__, lifespan=lifespan,
                  description="Local OCR on the dots.ocr model: POST /ocr for uploads, /v1 for OpenAI "
                  "clients.")
    app.state.dotocr = state
    install_exception_handlers(app, limits.retry_after_s)
    app.include_router(ocr_router)
    app.include_router(openai_router)

    @app.get("/health", response_model=Health, summary="Whether the model is loading, ready or failed")
    async def health(request: Request) -> Health:
        return state.health()

    app.add_middleware(BodySizeLimitMiddleware, limits=limits)
    if api_token:
        app.add_middleware(BearerTokenMiddleware, token=api_token)  # outermost: no body read without it
    return app
