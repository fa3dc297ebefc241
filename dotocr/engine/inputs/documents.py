"""PDF pages as images, rendered the way dots.ocr's own parser renders them, or one sentence saying why not.

Pages are rendered at 200 DPI, like the official parser; a page that would exceed MAX_PAGE_PIXELS (the
model's `max_pixels`: more would only be shrunk again) is rendered at the highest DPI that fits. Every page
says the DPI it was rendered at, so boxes in page pixels can be turned back into points (x * 72 / dpi).
Pages render one at a time, on demand, so a long PDF never sits in memory as images.

PDFium (pypdfium2, the renderer in Chrome: wheels for Windows, macOS and Linux, Apache-2.0/BSD) runs in a
process of its own for each open document (`pdf_worker.py`), under `RenderLimits`: a deadline for opening and
for each page, and on Linux an address-space limit. A PDF of nested forms that would render for minutes, or a
flate bomb that would take gigabytes, costs that process only: it is killed (or dies of its limit), the page
fails with one sentence, other documents never wait for it (PDFium's global lock is per process), and the next
page of the same document starts a fresh process. A caller that stops wanting the page (`should_stop`: a client
that left, a deadline) has the render killed too. On Windows the deadline is the bound; memory is not capped.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dotocr.errors import ImageError

from .pdf_worker import read_message, write_message

DEFAULT_DPI = 200
"""What dots.ocr's parser renders PDF pages at."""
MIN_DPI, MAX_DPI = 36, 600
MAX_PAGE_PIXELS = 11_289_600
"""The model's max_pixels: a page rendered bigger would only be shrunk again before the model sees it."""
MAX_PAGES = 2000
"""Most pages one document may have read from it in one run."""
RENDER_TIMEOUT_S = 60.0
"""Longest a PDF may take to open, or one page to render: a dense real page takes a few seconds."""
RENDER_MEMORY_BYTES = 768 * 1024 * 1024
"""Address space of the renderer's process (Linux): a page at the model's 11.3 megapixels is a 45 MB bitmap, and
a 600 DPI scan inside it a few hundred MB more."""
_WORKER = Path(__file__).with_name("pdf_worker.py")
_PDF_MAGIC = b"%PDF-"
_HEAD_BYTES = 1024
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                     b"RIFF", b"\x00\x00\x00\x0cjP  \r\n", b"\xffO\xffQ", b"\x00\x00\x01\x00", b"qoif", b"8BPS",
                     b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")
"""How the image formats we read begin (PNG, JPEG, GIF, BMP, TIFF, WebP, JPEG 2000, ICO, QOI, PSD, PNM; AVIF and
HEIC by their `ftyp` box): a file that begins so is an image, whatever bytes follow."""
_PASSWORD_ERROR = 4  # FPDF_ERR_PASSWORD
_SECURITY_ERROR = 5  # FPDF_ERR_SECURITY


class DocumentError(ImageError):
    """A PDF that cannot be read, or a page request that does not fit it; the message is one sentence."""


@dataclass(frozen=True)
class Page:
    number: int
    """1-based, as people count pages."""
    image: Image.Image
    dpi: float
    """What the page was rendered at: a box in these pixels is x * 72 / dpi points."""


def is_pdf(source: bytes | str | os.PathLike) -> bool:
    """Whether `source` (bytes or a file path) is a PDF, by its structure; reads at most 1 KiB of a file.

    `%PDF-` at the start, or within the first KiB after a little junk (as PDF readers allow), unless the file
    begins as an image format does: a PNG whose text chunk holds `%PDF-` is a PNG.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:_HEAD_BYTES])
    else:
        try:
            with open(os.fspath(source), "rb") as file:
                head = file.read(_HEAD_BYTES)
        except OSError:
            return False
    if head.startswith(_PDF_MAGIC):
        return True
    is_image = head.startswith(_IMAGE_SIGNATURES) or head[4:8] == b"ftyp"
    return _PDF_MAGIC in head and not is_image


def parse_page_ranges(text: str, max_pages: int = MAX_PAGES) -> list[int]:
    """"1-3,7" as [1, 2, 3, 7] (1-based, in the order given, each page once); ValueError with a sentence.

    Linear in the text, and at most `max_pages` pages in all: a short value (40 ranges of 1999 pages) must not
    cost seconds, nor an answer listing 80,000 pages.
    """
    pages: list[int] = []
    seen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if len(first) > 9 or len(last) > 9:  # more digits than any page count: no int() of thousands of digits
            raise ValueError(f"{_shorten(part)!r} is not a page or a range like 1-3")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"{_shorten(part)!r} is not a page or a range like 1-3") from None
        if low < 1 or high < low:
            raise ValueError(f"{part!r} is not a page range: pages count from 1 and a range goes upwards")
        if high - low >= max_pages - len(pages):
            raise ValueError(f"{_shorten(text)!r} asks for more than {max_pages} pages")
        for number in range(low, high + 1):
            if number not in seen:
                seen.add(number)
                pages.append(number)
    if not pages:
        raise ValueError(f"{_shorten(text)!r} names no pages; write them like 1-3,7")
    return pages


def describe_pages(numbers: Sequence[int], shown: int = 5) -> str:
    """Page numbers for a sentence: all of a few, or the first `shown` and how many more."""
    head = ", ".join(map(str, numbers[:shown]))
    return head if len(numbers) <= shown else f"{head} and {len(numbers) - shown} more"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class RenderLimits:
    """What opening a PDF, and rendering each of its pages, may take."""

    seconds: float = RENDER_TIMEOUT_S
    memory_bytes: int = RENDER_MEMORY_BYTES


class _Abandoned(Exception):
    """The renderer's process was killed (deadline, caller) or died (memory); `why` says which."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class RenderStopped(DocumentError):
    """The caller stopped wanting the page (`should_stop`); its render was killed."""


class _RenderProcess:
    """One `pdf_worker.py` process: requests go in one at a time, each answered before its deadline or the process
    is killed. A thread reads the replies, so waiting for one can watch the clock and the caller."""

    def __init__(self, memory_bytes: int) -> None:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window flashing up under the tray
        self._process = subprocess.Popen([sys.executable, str(_WORKER), str(memory_bytes)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, creationflags=flags)
        self._replies: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue()
        threading.Thread(target=self._read, name="dotocr-pdf-replies", daemon=True).start()
        self._finalizer = weakref.finalize(self, _end, self._process)

    def _read(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        try:
            while (message := read_message(stream)) is not None:
                self._replies.put(message)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stream.close()
        self._replies.put(None)

    def ask(self, request: dict[str, Any], payload: bytes, seconds: float,
            should_stop: Callable[[], bool] | None) -> tuple[dict[str, Any], bytes]:
        deadline = time.monotonic() + seconds
        try:
            assert self._process.stdin is not None
            write_message(self._process.stdin, request, payload)
        except (OSError, ValueError):
            raise _Abandoned("died") from None
        while True:
            if should_stop is not None and should_stop():
                self.kill()
                raise _Abandoned("stopped")
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise _Abandoned("deadline")
            try:
                reply = self._replies.get(timeout=min(0.05, left))
            except queue.Empty:
                continue
            if reply is None:
                self.kill()
                raise _Abandoned("died")
            return reply

    def kill(self) -> None:
        self._finalizer()


def _end(process: subprocess.Popen) -> None:
    """End the process: it exits by itself at the end of its input, a busy or stuck one is killed. Killed first,
    then waited for: the reading thread holds its output pipe until the process is gone (it then sees the end)."""
    with contextlib.suppress(OSError, ValueError):
        if process.stdin is not None:
            process.stdin.close()
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


class PdfDocument:
    """An open PDF. Use as a context manager; `render(n)` gives page n (1-based) as a `Page`.

    Thread-safe: calls on one document take turns; different documents render side by side, each in its own
    process. `should_stop`, asked several times a second while PDFium works, abandons the work when it says so.
    """

    def __init__(self, source: bytes | str | os.PathLike, name: str = "The PDF", *,
                 limits: RenderLimits | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.limits = limits or RenderLimits()
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._open_request: tuple[dict[str, Any], bytes] = ({"op": "open"}, bytes(source))
        else:
            self._open_request = ({"op": "open", "path": os.fspath(source)}, b"")
        self._lock = threading.Lock()
        self._process: _RenderProcess | None = None
        self.page_count = 0
        with self._lock:
            self._worker(should_stop)
        if self.page_count < 1:
            self.close()
            raise DocumentError(f"{name} has no pages; nothing to read.")

    def __enter__(self) -> PdfDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()

    def select(self, pages: Sequence[int] | None, max_pages: int = MAX_PAGES) -> tuple[list[int], list[int]]:
        """(the requested pages this PDF has, the ones it lacks); all pages when `pages` is None.

        More than `max_pages` is refused with a sentence saying how to ask for fewer.
        """
        wanted = list(pages) if pages is not None else list(range(1, self.page_count + 1))
        present = [n for n in wanted if n <= self.page_count]
        if len(present) > max_pages:
            raise DocumentError(f"{self.name} has {self.page_count} pages, more than the {max_pages} read at "
                                f"once; choose some with pages, e.g. 1-{max_pages}.")
        return present, [n for n in wanted if n > self.page_count]

    def render(self, number: int, dpi: float = DEFAULT_DPI, max_pixels: int = MAX_PAGE_PIXELS, *,
               should_stop: Callable[[], bool] | None = None) -> Page:
        """Page `number` (1-based) as an RGB image at `dpi`, or lower when it would exceed `max_pixels`."""
        if not 1 <= number <= self.page_count:
            raise DocumentError(f"{self.name} has {self.page_count} pages; there is no page {number}.")
        what = f"Page {number} of {self.name}"
        with self._lock:
            size, _ = self._ask({"op": "size", "page": number - 1}, what, should_stop)
            dpi = fitting_dpi(float(size["width"]), float(size["height"]), dpi, max_pixels)
            reply, pixels = self._ask({"op": "render", "page": number - 1, "scale": dpi / 72}, what, should_stop)
        image = Image.frombuffer(reply["mode"], (reply["width"], reply["height"]), pixels, "raw", reply["raw"],
                                 reply["stride"], 1).convert("RGB")
        return Page(number, image, dpi)

    def pages(self, numbers: Sequence[int], dpi: float = DEFAULT_DPI) -> Iterator[Page]:
        for number in numbers:
            yield self.render(number, dpi)

    # -- the renderer's process ----------------------------------------------------------------------------

    def _worker(self, should_stop: Callable[[], bool] | None) -> _RenderProcess:
        """The document's process, started and the PDF opened in it when there is none (the first call, or after
        a page killed the last one)."""
        if self._process is not None:
            return self._process
        process = _RenderProcess(self.limits.memory_bytes)
        try:
            reply, _ = process.ask(*self._open_request, self.limits.seconds, should_stop)
        except _Abandoned as exc:
            raise self._abandoned(exc, self.name, "open") from None
        if "error" in reply:
            process.kill()
            raise DocumentError(_open_error(self.name, reply)) from None
        self._process, self.page_count = process, int(reply["pages"])
        return process

    def _ask(self, request: dict[str, Any], what: str,
             should_stop: Callable[[], bool] | None) -> tuple[dict[str, Any], bytes]:
        process = self._worker(should_stop)
        try:
            reply, payload = process.ask(request, b"", self.limits.seconds, should_stop)
        except _Abandoned as exc:
            self._process = None  # the next page starts a fresh process
            raise self._abandoned(exc, what, "render") from None
        if "error" in reply:
            if reply["error"] == "memory":
                raise DocumentError(self._memory_sentence(what, "render"))
            raise DocumentError(f"{what} could not be rendered (the file is damaged); repair or re-export the PDF.")
        return reply, payload

    def _abandoned(self, exc: _Abandoned, what: str, doing: str) -> DocumentError:
        if exc.why == "stopped":
            return RenderStopped(f"{what} was not {doing}ed: the result is no longer wanted.")
        if exc.why == "deadline":
            return DocumentError(f"{what} took longer than {self.limits.seconds:g} s to {doing}; re-export the PDF "
                                 "(print it to a new PDF) or leave that page out.")
        return DocumentError(self._memory_sentence(what, doing))

    def _memory_sentence(self, what: str, doing: str) -> str:
        return (f"{what} needs more than {self.limits.memory_bytes // 2**20} MiB of memory to {doing}; re-export "
                "the PDF (print it to a new PDF) or leave that page out.")


def fitting_dpi(width_pt: float, height_pt: float, dpi: float, max_pixels: int = MAX_PAGE_PIXELS) -> float:
    """`dpi`, or the highest DPI at which a page of this size (in points) stays within `max_pixels`."""
    if width_pt <= 0 or height_pt <= 0:
        return dpi

    def pixels(at: float) -> int:  # PDFium may round each side up by a pixel; leave room for that
        return (math.ceil(width_pt * at / 72) + 1) * (math.ceil(height_pt * at / 72) + 1)

    if pixels(dpi) <= max_pixels:
        return dpi
    fitted = math.floor(dpi * math.sqrt(max_pixels / pixels(dpi)) * 100) / 100
    while fitted > 1 and pixels(fitted) > max_pixels:
        fitted = round(fitted - 0.01, 2)
    return fitted


def check_dpi(dpi: float) -> float:
    if not (MIN_DPI <= dpi <= MAX_DPI) or math.isnan(dpi):
        raise ValueError(f"{dpi:g} DPI is outside {MIN_DPI}-{MAX_DPI}; dots.ocr reads pages best at {DEFAULT_DPI}")
    return dpi


def _open_error(name: str, reply: dict[str, Any]) -> str:
    code = reply.get("code")
    if reply.get("error") == "missing":
        return f"{name} is a PDF, and reading PDFs needs pypdfium2; install it with pip install pypdfium2."
    if reply.get("error") == "memory":
        return f"{name} needs more memory to open than a PDF may take; re-export it (print it to a new PDF)."
    if code == _PASSWORD_ERROR:
        return f"{name} is encrypted with a password; save an unprotected copy and try again."
    if code == _SECURITY_ERROR:
        return f"{name} uses a security handler that cannot be opened; save an unprotected copy and try again."
    return f"{name} is damaged or not a complete PDF and could not be opened; re-export or download it again."
