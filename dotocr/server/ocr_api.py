"""POST /ocr: the curl route. A multipart upload in, the `dotocr ocr --format json` object out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dotocr.config import OUTPUT_FORMATS, PROMPT_MODES
from dotocr.engine import Box, parse_box
from dotocr.errors import DotOCRError

from .errors import ApiError
from .schemas import OCR_FORM_SCHEMA, ErrorResponse, OCRResponse
from .state import ServerState
from .uploads import Form, read_multipart

router = APIRouter()

MAX_FILENAME = 255
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description} for code, description in (
        (400, "Bad form field, or an image that is corrupt, truncated, empty or too many pixels."),
        (401, "Missing or wrong API token (only when the server has one)."),
        (403, "A request from a web page (foreign Origin), or a Host that is not this server."),
        (408, "The body arrived too slowly."),
        (413, "The upload is over the size limit."),
        (415, "Not multipart/form-data, or the file is not an image."),
        (422, "The JSON body does not match the schema."),
        (502, "The remote engine failed."),
        (503, "Loading, busy or out of image memory (see Retry-After), or the model is unavailable."),
        (504, "The request ran past the server's time limit."),
    )
}


@router.post(
    "/ocr", response_model=OCRResponse, responses=ERRORS, summary="Read the text in an uploaded image",
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": OCR_FORM_SCHEMA}}}})
async def ocr(request: Request) -> JSONResponse:
    """`curl -F file=@shot.png -F prompt=text http://127.0.0.1:8765/ocr`"""
    server: ServerState = request.app.state.dotocr
    form = await read_multipart(request, server.limits.max_upload_bytes)
    options = _ocr_options(form, server)
    filename, data = form.files["file"]
    ticket = server.admit()  # only now: a slow upload holds no place in line
    try:
        image = await server.decode(ticket, data, f"The uploaded file {filename!r}" if filename else "The upload")
        del form, data  # while it waits in line, the request holds the decoded image only
        result = await server.run_ocr(ticket, request.receive, image, file=filename[:MAX_FILENAME], **options)
    finally:
        ticket.close()
    return JSONResponse(result.to_json_dict())  # as is: `cells` is absent, not null, for the text prompt


def _ocr_options(form: Form, server: ServerState) -> dict[str, Any]:
    if "file" not in form.files:
        raise ApiError(400, "The form has no file field; send the image as file=@shot.png.", "invalid_form")
    fields = form.fields
    prompt = fields.get("prompt") or None
    if prompt is not None and prompt not in PROMPT_MODES:
        raise ApiError(400, f"prompt={prompt!r} is not one of {', '.join(PROMPT_MODES)}.", "invalid_form")
    output_format = fields.get("format") or server.engine.settings.output_format
    if output_format not in OUTPUT_FORMATS:
        raise ApiError(400, f"format={output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}.",
                       "invalid_form")
    bbox = _parse_bbox(fields["bbox"]) if fields.get("bbox") else None
    if prompt == "grounding" and bbox is None:
        raise ApiError(400, "prompt=grounding needs bbox=x1,y1,x2,y2 (image pixels).", "invalid_form")
    return {"prompt": prompt, "output_format": output_format, "bbox": bbox,
            "max_new_tokens": server.clamp_tokens(_parse_tokens(fields.get("max_new_tokens")))}


def _parse_bbox(text: str) -> Box:
    try:
        return parse_box(text, shown=f"bbox={text!r}")  # the engine's one box rule
    except DotOCRError as exc:
        raise ApiError(400, str(exc), "invalid_form") from None


def _parse_tokens(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, f"max_new_tokens={text!r} must be a whole number of at least 1.", "invalid_form")
    return value
