"""The OpenAI-compatible routes, as vLLM serves dots.ocr: what the official parser and `openai` clients call.

The answer's content is what the model generated (`OCRResult.raw`), as vLLM would return it, so clients
that post-process dots.ocr output themselves get the same text from either server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dotocr.config import PROMPT_MODES
from dotocr.engine import OCRResult, instruction_for, strip_image_placeholder
from dotocr.errors import DotOCRError

from .errors import ApiError, engine_error, error_body, log
from .ocr_api import ERRORS
from .schemas import ChatCompletion, ChatCompletionRequest, ImagePart, ModelCard, ModelList, TextPart
from .state import ServerState
from .uploads import decode_data_url

router = APIRouter(prefix="/v1")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/models", response_model=ModelList, summary="The one model this server runs")
async def models(request: Request) -> ModelList:
    server: ServerState = request.app.state.dotocr
    return ModelList(data=[ModelCard(id=server.model_name, created=int(time.time()))])


@router.post(
    "/chat/completions", response_model=ChatCompletion, responses={
        **ERRORS, 200: {"description": "A chat completion, or server-sent events when stream is true.",
                        "content": {"text/event-stream": {}}}},
    summary="OCR through the OpenAI chat completions protocol")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    """One user message with one image (a base64 data URL) and, optionally, the instruction text.

    Any model name is accepted: this server runs one model. A leading `<|img|><|imgpad|><|endofimg|>` in the
    text (the official dots.ocr client sends it) is dropped; the image placeholder is added by the engine.
    """
    server: ServerState = request.app.state.dotocr
    image_bytes, instruction = _image_and_instruction(body, server.limits.max_upload_bytes)
    ticket = server.admit()
    try:
        image = await server.decode(ticket, image_bytes, "The image in image_url")
        options: dict[str, Any] = {
            "max_prompt_tokens": server.limits.max_prompt_tokens,
            "prompt": _mode_for(instruction), "instruction": instruction,
            "max_new_tokens": server.clamp_tokens(body.max_completion_tokens or body.max_tokens),
            "temperature": body.temperature if body.temperature is not None else 0.0,
            "top_p": body.top_p if body.top_p is not None else 1.0,
        }
        model = body.model or server.model_name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            pieces = await server.stream_ocr(ticket, request.receive, image, **options)
            return StreamingResponse(_sse(pieces(), model, include_usage, server),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        result = await server.run_ocr(ticket, request.receive, image, **options)
    finally:
        ticket.close()
    return _completion(result, model)


def _image_and_instruction(body: ChatCompletionRequest, max_bytes: int) -> tuple[bytes, str | None]:
    user = next((m for m in reversed(body.messages) if m.role == "user"), None)
    if user is None or not isinstance(user.content, list):
        raise ApiError(400, "The last user message must hold a content list with one image_url part "
                       "(a base64 data URL) and, optionally, a text part.", "invalid_request")
    images = [p for p in user.content if isinstance(p, ImagePart)]
    if len(images) != 1:
        raise ApiError(400, f"The user message must hold exactly one image_url part, not {len(images)}.",
                       "invalid_request")
    image_url = images[0].image_url
    url = image_url if isinstance(image_url, str) else image_url.url
    data = decode_data_url(url, max_bytes)
    text = "".join(p.text for p in user.content if isinstance(p, TextPart))
    instruction = strip_image_placeholder(text)  # the rest goes to the model as sent, spaces and all
    return data, instruction if instruction.strip() else None


def _mode_for(instruction: str | None) -> str | None:
    """The prompt mode whose official instruction this is, so layout output is parsed like the mode's."""
    if instruction is None:
        return None
    for mode in PROMPT_MODES:
        if mode != "grounding" and instruction.strip() == instruction_for(mode).strip():
            return mode
    return "text"


def _finish_reason(result: OCRResult) -> str:
    return "length" if result.stop_reason == "max_new_tokens" else "stop"


def _usage(result: OCRResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.generated_tokens,
            "total_tokens": result.prompt_tokens + result.generated_tokens}


def _completion(result: OCRResult, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.raw},
                     "finish_reason": _finish_reason(result), "logprobs": None}],
        "usage": _usage(result),
    }


async def _sse(pieces: AsyncIterator[str | OCRResult], model: str, include_usage: bool,
               server: ServerState) -> AsyncIterator[str]:
    """Chunks as OpenAI streams them; an error after the start arrives as an `error` event, then [DONE]."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for piece in pieces:
            if isinstance(piece, str):
                if piece:
                    yield chunk({"content": piece})
                continue
            yield chunk({}, _finish_reason(piece))
            if include_usage:
                data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": _usage(piece)}
                yield f"data: {json.dumps(data)}\n\n"
    except ApiError as exc:
        yield f"data: {json.dumps(error_body(exc.message, exc.kind, exc.status))}\n\n"
    except Exception as exc:  # the engine's errors (and anything else) after the 200 went out
        if isinstance(exc, DotOCRError):
            error = engine_error(exc, server.limits.retry_after_s)
        else:
            log.error("unexpected error while streaming", exc_info=exc)
            error = ApiError(500, "The server hit an internal error; its log has the details.",
                             "internal_error")
        yield f"data: {json.dumps(error_body(error.message, error.kind, error.status))}\n\n"
    yield "data: [DONE]\n\n"
