"""POST /ocr: the curl route. A multipart upload in, the `dotocr ocr --format json` object out.

A PDF upload is read page by page (rendered at 200 DPI like dots.ocr's parser, or `dpi`; `pages=1-3,7` picks
some) under the one place in line it was admitted with, and answers {"file", "page_count", "pages": [...]}
with one result object per page, in page order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dotocr.config import OUTPUT_FORMATS, PROMPT_MODES
from dotocr.engine import (
    DEFAULT_DPI,
    MAX_PAGE_PIXELS,
    Box,
    PdfDocument,
    RenderLimits,
    RenderStopped,
    check_dpi,
    describe_pages,
    is_pdf,
    parse_box,
    parse_page_ranges,
)
from dotocr.errors import DotOCRError

from .errors import ApiError, engine_error
from .gate import Ticket
from .schemas import OCR_FORM_SCHEMA, DocumentResponse, ErrorResponse, OCRResponse
from .state import ServerState
from .uploads import Form, read_multipart

router = APIRouter()
T = TypeVar("T")

MAX_FILENAME = 255
MAX_PDF_PAGES = 100
"""Most pages one upload may ask for: more is a job for `dotocr ocr` or the OpenAI route, a page a request."""
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
    "/ocr", response_model=OCRResponse | DocumentResponse, responses=ERRORS,
    summary="Read the text in an uploaded image, or in each page of a PDF",
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": OCR_FORM_SCHEMA}}}})
async def ocr(request: Request) -> JSONResponse:
    """`curl -F file=@shot.png -F prompt=text http://127.0.0.1:8765/ocr`"""
    server: ServerState = request.app.state.dotocr
    form = await read_multipart(request, server.limits.max_upload_bytes)
    options = _ocr_options(form, server)
    filename, data = form.files["file"]
    what = f"The uploaded file {filename!r}" if filename else "The upload"
    pdf = is_pdf(data)
    if not pdf and (form.fields.get("pages") or form.fields.get("dpi")):
        raise ApiError(400, "pages and dpi apply to PDF uploads only; leave them out for an image.",
                       "invalid_form")
    ticket = server.admit()  # only now: a slow upload holds no place in line
    try:
        if pdf:
            # the renderer's process, and one rendered page at a time in this one (its bitmap and RGB copy)
            server.hold(ticket, server.limits.render_memory_bytes + MAX_PAGE_PIXELS * 12)
            return JSONResponse(await _read_pdf(server, ticket, request, data, filename[:MAX_FILENAME], what,
                                                form.fields, options))
        image = await server.decode(ticket, data, what, server.engine.settings.max_image_size)
        del form, data  # while it waits in line, the request holds the decoded image only
        result = await server.run_ocr(ticket, request.receive, image, file=filename[:MAX_FILENAME], **options)
    finally:
        ticket.close()
    return JSONResponse(result.to_json_dict())  # as is: `cells` is absent, not null, for the text prompt


async def _read_pdf(server: ServerState, ticket: Ticket, request: Request, data: bytes, filename: str, what: str,
                    fields: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    """Every requested page, rendered off the event loop one at a time and read in page order.

    PDFium runs in a process of its own under the server's render limits, so a PDF built to render for
    minutes or to take gigabytes costs its own request one sentence and holds up nobody else; a client that
    leaves, or a request past its deadline, has its render killed.
    """
    wanted = _parse_pages(fields.get("pages"))
    dpi = _parse_dpi(fields.get("dpi"))
    limits = RenderLimits(server.limits.render_timeout_s, server.limits.render_memory_bytes)
    document = await _rendering(server, ticket, request, lambda: PdfDocument(
        data, what, limits=limits, should_stop=ticket.should_stop))
    try:
        try:
            present, missing = document.select(wanted, MAX_PDF_PAGES)
        except DotOCRError as exc:
            raise engine_error(exc, server.limits.retry_after_s) from None
        if missing:
            raise ApiError(400, f"{what} has {document.page_count} pages; page {describe_pages(missing)} "
                           f"{'does' if len(missing) == 1 else 'do'} not exist.", "invalid_form")
        pages = []
        for number in present:
            page = await _rendering(server, ticket, request,
                                    lambda n=number: document.render(n, dpi, should_stop=ticket.should_stop))
            result = await server.run_ocr(ticket, request.receive, page.image, file=filename, **options)
            result.page, result.dpi = page.number, page.dpi
            pages.append(result.to_json_dict())
            del page
        return {"file": filename, "page_count": document.page_count, "pages": pages}
    finally:
        document.close()


async def _rendering(server: ServerState, ticket: Ticket, request: Request, work: Callable[[], T]) -> T:
    """`work` (opening the PDF or rendering a page) on a worker thread, given up when the client leaves."""
    try:
        return await server.unless_gone(ticket, request.receive, to_thread.run_sync(work))
    except RenderStopped:
        raise server.stopped(ticket) from None
    except DotOCRError as exc:
        raise engine_error(exc, server.limits.retry_after_s) from None


def _parse_pages(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return parse_page_ranges(text)  # linear, at most MAX_PAGES: cheap enough for the event loop
    except ValueError as exc:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ApiError(400, f"pages={shown!r}: {exc}.", "invalid_form") from None


def _parse_dpi(text: str | None) -> float:
    if not text:
        return DEFAULT_DPI
    try:
        return check_dpi(float(text))
    except ValueError as exc:
        reason = str(exc) if "DPI" in str(exc) else "not a number"
        raise ApiError(400, f"dpi={text!r}: {reason}.", "invalid_form") from None


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
