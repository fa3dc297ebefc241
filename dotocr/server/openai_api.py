"""The OpenAI-compatible routes, as vLLM serves dots.ocr: what the official parser and `openai` clients call.

A request becomes the prompt vLLM would build from it: the checkpoint's chat template (system turns as
`<|system|>...<|endofsystem|>\n`, then the user turn), text parts joined with "\n", the image where the
`<|img|><|imgpad|><|endofimg|>` placeholder stands (at the start of the user text, or put there followed by
"\n" when the text has none, as vLLM does), whitespace passed through as sent. The image is sized by
dots.ocr's own rule with no extra cap, so token counts and boxes are vLLM's. The answer's content is what
the model generated (`OCRResult.raw`), so clients that post-process dots.ocr output themselves get the same
text from either server.

With `logprobs: true` each answer token's log probability comes back in vLLM's shape (`choices[0].logprobs.content`,
one entry per token of the kept answer: `token` is the text it added, `bytes` that text's UTF-8); `top_logprobs`
is accepted but its lists stay empty. Streamed, the tokens come in one chunk, the one carrying `finish_reason`:
the engine hands the probabilities over with its result, after the text has streamed.

Where we differ from vLLM, on purpose: a user message with an image and no text part at all gets the
server's prompt setting (vLLM would send the model a bare "\n"); earlier user or assistant turns are refused
(this is an OCR server: one page per request).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dotocr.config import PROMPT_MODES
from dotocr.engine import IMAGE_PLACEHOLDER, OCRResult, instruction_for
from dotocr.errors import DotOCRError

from .errors import ApiError, engine_error, error_body, log
from .ocr_api import ERRORS
from .schemas import ChatCompletion, ChatCompletionRequest, ImagePart, ModelCard, ModelList, TextPart
from .state import ServerState
from .uploads import decode_data_url

router = APIRouter(prefix="/v1")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MAX_COMPLETION_TOKENS = 32768
"""The most tokens one chat request may generate: the official client's default, over its parser's 16,384."""


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
    """System messages, then one user message with one image (a base64 data URL) and, optionally, text.

    Any model name is accepted: this server runs one model. The prompt is rendered as vLLM renders it for
    dots.ocr (see the module docstring); `max_completion_tokens` (or `max_tokens`) is honoured up to 32,768.
    """
    server: ServerState = request.app.state.dotocr
    image_bytes, instruction, system = _render_messages(body, server.limits.max_upload_bytes)
    ticket = server.admit()
    try:
        image = await server.decode(ticket, image_bytes, "The image in image_url", 0)  # sized as vLLM does
        options: dict[str, Any] = {
            "max_prompt_tokens": server.limits.max_prompt_tokens,
            "prompt": _mode_for(instruction), "instruction": instruction, "system": system,
            "output_format": "text",  # the answer goes back raw; no instruction: the prompt setting, as vLLM's
            "max_new_tokens": _token_cap(body, server.max_new_tokens),
            "temperature": body.temperature if body.temperature is not None else 0.0,
            "top_p": body.top_p if body.top_p is not None else 1.0,
            "max_image_size": 0,  # dots.ocr's own sizing, like vLLM: the client maps boxes back by it
            "codes": False,  # the model's own answer, as vLLM gives it: no QR codes or bar codes put first
        }
        model = body.model or server.model_name
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            pieces = await server.stream_ocr(ticket, request.receive, image, **options)
            return StreamingResponse(_sse(pieces(), model, include_usage, server, bool(body.logprobs)),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        result = await server.run_ocr(ticket, request.receive, image, **options)
    finally:
        ticket.close()
    return _completion(result, model, bool(body.logprobs))


def _token_cap(body: ChatCompletionRequest, default: int) -> int:
    """The request's own cap, up to MAX_COMPLETION_TOKENS; the server's setting when it names none."""
    requested = body.max_completion_tokens or body.max_tokens
    return default if requested is None else min(requested, MAX_COMPLETION_TOKENS)


def _texts(content: Any, where: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if any(isinstance(p, ImagePart) for p in content):
        raise ApiError(400, f"A {where} message cannot hold an image; put the image in the user message.",
                       "invalid_request")
    return [p.text for p in content if isinstance(p, TextPart)]


def _render_messages(body: ChatCompletionRequest, max_bytes: int) -> tuple[bytes, str | None, str | None]:
    """(image bytes, instruction after the image, system text) as the checkpoint's chat template renders them."""
    *earlier, user = body.messages
    if user.role != "user" or not isinstance(user.content, list):
        raise ApiError(400, "The last message must be the user's, holding a content list with one image_url "
                       "part (a base64 data URL) and, optionally, a text part.", "invalid_request")
    systems: list[str] = []
    for message in earlier:
        if message.role == "system":
            systems.append("\n".join(_texts(message.content, "system")))
        elif message.role in ("user", "assistant"):
            raise ApiError(400, "This server reads one page per request: system messages, then one user "
                           "message with the image; send earlier turns as separate requests.", "invalid_request")
        # developer and tool messages: the checkpoint's template renders nothing for them
    # several system turns render as several <|system|>...<|endofsystem|>\n blocks
    system = "<|endofsystem|>\n<|system|>".join(systems) if systems else None

    images = [p for p in user.content if isinstance(p, ImagePart)]
    if len(images) != 1:
        raise ApiError(400, f"The user message must hold exactly one image_url part, not {len(images)}.",
                       "invalid_request")
    image_url = images[0].image_url
    url = image_url if isinstance(image_url, str) else image_url.url
    data = decode_data_url(url, max_bytes)
    parts = [p.text for p in user.content if isinstance(p, TextPart)]
    if not parts:
        return data, None, system  # the server's prompt setting
    text = "\n".join(parts)
    count = text.count(IMAGE_PLACEHOLDER)
    if count == 0:
        return data, "\n" + text, system  # vLLM puts the missing placeholder first, joined by "\n"
    if count > 1 or not text.startswith(IMAGE_PLACEHOLDER):
        raise ApiError(400, f"The text holds {IMAGE_PLACEHOLDER} {count} times; put it once, at the start of "
                       "the text, or leave it out.", "invalid_request")
    return data, text[len(IMAGE_PLACEHOLDER):], system


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


def _logprobs(result: OCRResult, asked: bool) -> dict[str, Any] | None:
    """vLLM's `logprobs` for the answer's tokens when asked and the engine could tell (None otherwise)."""
    if not asked or result.low_confidence is None:
        return None
    return {"content": [{"token": text, "logprob": math.log(p) if p > 0 else -9999.0,  # vLLM's -inf
                         "bytes": list(text.encode("utf-8")), "top_logprobs": []} for text, p in result.pieces]}


def _completion(result: OCRResult, model: str, logprobs: bool = False) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.raw},
                     "finish_reason": _finish_reason(result), "logprobs": _logprobs(result, logprobs)}],
        "usage": _usage(result),
    }


async def _sse(pieces: AsyncIterator[str | OCRResult], model: str, include_usage: bool,
               server: ServerState, logprobs: bool = False) -> AsyncIterator[str]:
    """Chunks as OpenAI streams them; an error after the start arrives as an `error` event, then [DONE]."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, tokens: dict[str, Any] | None = None,
              **extra: Any) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": tokens}]
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
            yield chunk({}, _finish_reason(piece), _logprobs(piece, logprobs))
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
