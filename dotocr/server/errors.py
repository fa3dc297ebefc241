"""Every failure leaves the server as one JSON shape with one sentence: OpenAI's error object.

OpenAI clients show `error.message` as is, so the curl route and the chat route share it. Engine errors
map to statuses here and nowhere else; anything unexpected becomes a 500 that names no internals (the
traceback goes to the server's log only).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from dotocr.errors import (
    DotOCRError,
    ImageError,
    ModelUnavailableError,
    OutOfMemoryError,
    PromptTooLongError,
    RemoteEngineError,
)

log = logging.getLogger("dotocr.server")

BODY_PARSE_DETAIL = "There was an error parsing the body"
"""FastAPI's 400 detail when the body is JSON that Python's parser refused for a reason other than syntax."""


class ApiError(Exception):
    """A refusal a handler raises on purpose; `message` is the sentence the client sees."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    # A message may quote the request; a lone surrogate in it must not make the answer unencodable.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": {"message": message, "type": kind, "code": status}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.kind, error.status), status_code=error.status,
                        headers=error.headers)


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> None:
    """Answer from plain ASGI code (middleware), where no Response object is at hand."""
    payload = json.dumps(body).encode("utf-8")
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def busy_error(retry_after_s: int) -> ApiError:
    return ApiError(503, "The model is busy with other requests; try again in a few seconds.", "busy",
                    {"Retry-After": str(retry_after_s)})


def loading_error(retry_after_s: int) -> ApiError:
    return ApiError(503, "The model is loading; try again in a few seconds.", "loading",
                    {"Retry-After": str(retry_after_s)})


def timeout_error(timeout_s: float) -> ApiError:
    return ApiError(504, f"The request took longer than the server's limit of {timeout_s:g} s and was "
                    "stopped; try a smaller image, fewer max_new_tokens, or raise --request-timeout.",
                    "timeout")


def engine_error(exc: DotOCRError, retry_after_s: int) -> ApiError:
    """The status for each engine error; the engine's sentence goes through unchanged."""
    message = str(exc) or "The OCR engine failed."
    if isinstance(exc, ImageError):
        return ApiError(400, message, "invalid_image")
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, message, "prompt_too_long")
    if isinstance(exc, ModelUnavailableError):
        return ApiError(503, message, "model_unavailable")
    if isinstance(exc, OutOfMemoryError):
        return ApiError(503, message, "out_of_memory")
    if isinstance(exc, RemoteEngineError):
        return ApiError(502, message, "remote_error")
    return ApiError(400, message, "ocr_failed")


def install_exception_handlers(app: FastAPI, retry_after_s: int) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_engine_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DotOCRError)
        return error_response(engine_error(exc, retry_after_s))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            message = f"There is no {request.url.path} here; the routes are listed in /openapi.json."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /openapi.json."
        elif exc.status_code == 400 and exc.detail == BODY_PARSE_DETAIL:
            # FastAPI's answer for a JSON body Python cannot parse (an integer of thousands of digits)
            return error_response(ApiError(422, "The JSON body could not be read (nested too deeply, a number "
                                           "too long, or not UTF-8); send plain JSON.", "invalid_request"))
        else:
            message = str(exc.detail)
        return error_response(ApiError(exc.status_code, message, "http_error", dict(exc.headers or {})))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(ApiError(422, describe_validation_error(exc), "invalid_request"))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, "The server hit an internal error; its log has the details.",
                                       "internal_error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(DotOCRError, on_engine_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def describe_validation_error(exc: RequestValidationError) -> str:
    """The first problem as one sentence: where it is and what is wrong."""
    errors = exc.errors()
    if not errors:
        return "The request is not valid."
    first = errors[0]
    # pydantic names union members in the location ("function-after[...]", "str"); the client's path is the rest
    where = ".".join(str(part) for part in first.get("loc", ())
                     if part != "body" and not (isinstance(part, str) and ("[" in part or part == "str"))) or "the body"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"Invalid request: {where}: {first.get('msg', 'is not valid')}{more}."
