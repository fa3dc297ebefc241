"""Reading an upload into memory, and deciding whether it is an image, before it queues for the model.

Starlette's own form parser spools files over 1 MiB to a temporary file; a request must never reach the
file system, so the multipart body is parsed here, in memory, bounded by the body-size guard in front.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from dotocr.engine import MAX_INPUT_PIXELS, declared_png_size

from .errors import ApiError

MAX_PARTS = 16
MAX_FIELD_BYTES = 4096


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """name -> (filename as sent, content)."""


async def read_multipart(request: Request, max_file_bytes: int) -> Form:
    """Parse a multipart/form-data body in memory; every malformed case is a 400 or 415 sentence."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(415, "Send the image as multipart/form-data with the field 'file' (for example: "
                       "curl -F file=@shot.png http://127.0.0.1:8765/ocr).", "unsupported_media_type")
    collector = _PartCollector(max_file_bytes)
    try:
        parser = MultipartParser(options[b"boundary"], collector.callbacks())
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # the parser's own errors: bad boundary, bad headers, too many headers
        raise ApiError(400, f"The multipart body could not be parsed ({exc}); send it the way curl -F does.",
                       "invalid_form") from None
    if not collector.finished:
        raise ApiError(400, "The multipart body ended before its closing boundary; the upload was cut off.",
                       "invalid_form")
    return collector.form


class _PartCollector:
    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.form = Form()
        self.finished = False
        self._parts = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._data = io.BytesIO()
        self._name = ""
        self._filename: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise ApiError(400, f"The form has more than {MAX_PARTS} fields; send file, prompt, format, bbox "
                           "and max_new_tokens only.", "invalid_form")
        self._headers = {}
        self._data = io.BytesIO()

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get(b"content-disposition"))
        if kind != b"form-data" or b"name" not in options:
            raise ApiError(400, "A form part has no Content-Disposition name; send fields the way "
                           "curl -F does.", "invalid_form")
        self._name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        limit = self.max_file_bytes if self._filename is not None else MAX_FIELD_BYTES
        if self._data.tell() + (end - start) > limit:
            if self._filename is None:
                raise ApiError(400, f"The form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes.",
                               "invalid_form")
            raise ApiError(413, f"The uploaded file is larger than this server accepts "
                           f"({limit / (1024 * 1024):.1f} MiB); send a smaller image.", "request_too_large")
        self._data.write(data[start:end])

    def _part_end(self) -> None:
        content = self._data.getvalue()
        if self._filename is not None:
            self.form.files.setdefault(self._name, (self._filename, content))
        else:
            self.form.fields.setdefault(self._name, content.decode("utf-8", "replace"))

    def _end(self) -> None:
        self.finished = True


def inspect_image_bytes(data: bytes, what: str) -> tuple[tuple[int, int], str]:
    """The size and mode the header declares; 415 for bytes that are no image format at all.

    Reads the header only, so a queue slot or a decode is never spent on a non-image, and the decoded
    size is known before any pixel is decoded. Run it on a worker thread: some headers (a JPEG of millions
    of markers) take seconds to parse. Whether the image is complete is the engine's `load_image` question.
    """
    if not data:
        raise ApiError(400, f"{what} is empty; send an image file.", "invalid_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused by size below
            with Image.open(io.BytesIO(data)) as image:
                size, mode = image.size, image.mode
    except UnidentifiedImageError:
        declared = declared_png_size(data[:32])
        if declared is not None and 0 in declared:
            raise ApiError(400, f"{what} is {declared[0]} x {declared[1]} pixels and has nothing to read; send "
                           "an image with content.", "invalid_image") from None
        raise ApiError(415, f"{what} is not an image format this server reads; send a PNG, JPEG, WebP, "
                       "BMP, GIF or TIFF.", "unsupported_media_type") from None
    except Image.DecompressionBombError:
        raise ApiError(400, f"{what} claims to be larger than the {MAX_INPUT_PIXELS // 1_000_000}-megapixel "
                       "limit; crop or scale it down.", "invalid_image") from None
    except Exception:  # identified but broken: let load_image name the problem, at no decoded cost
        return (0, 0), "L"
    if size[0] * size[1] > MAX_INPUT_PIXELS:
        raise ApiError(400, f"{what} is {size[0]} x {size[1]} pixels, larger than the "
                       f"{MAX_INPUT_PIXELS // 1_000_000}-megapixel limit; crop or scale it down.",
                       "invalid_image")
    return size, mode


_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a base64 data URL. Remote URLs are refused: the server fetches nothing."""
    match = _DATA_URL.match(url)
    if not match:
        if url.lower().startswith(("http://", "https://", "file:")):
            raise ApiError(400, "image_url must be a base64 data URL (data:image/png;base64,...); this "
                           "server does not fetch URLs.", "invalid_image")
        raise ApiError(400, "image_url is not a data URL; send data:image/png;base64,<base64 bytes>.",
                       "invalid_image")
    if not match.group("b64"):
        raise ApiError(400, "image_url must be base64 encoded (data:image/png;base64,...).", "invalid_image")
    payload = url[match.end():]
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise ApiError(413, f"The image is larger than this server accepts ({max_bytes / (1024 * 1024):.1f} "
                       "MiB); send a smaller image.", "request_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image_url does not hold valid base64 data.", "invalid_image") from None
