"""PDF pages as images, rendered the way dots.ocr's own parser renders them, or one sentence saying why not.

Pages are rendered at 200 DPI, like the official parser; a page that would exceed MAX_PAGE_PIXELS (the
model's `max_pixels`: more would only be shrunk again) is rendered at the highest DPI that fits. Every page
says the DPI it was rendered at, so boxes in page pixels can be turned back into points (x * 72 / dpi).
Pages render one at a time, on demand, so a long PDF never sits in memory as images.

pypdfium2 (PDFium, the renderer in Chrome: wheels for Windows, macOS and Linux, Apache-2.0/BSD) is imported
only when a PDF is opened. PDFium is not thread-safe, so every call into it holds one lock.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dotocr.errors import ImageError

DEFAULT_DPI = 200
"""What dots.ocr's parser renders PDF pages at."""
MIN_DPI, MAX_DPI = 36, 600
MAX_PAGE_PIXELS = 11_289_600
"""The model's max_pixels: a page rendered bigger would only be shrunk again before the model sees it."""
MAX_PAGES = 2000
"""Most pages one document may have read from it in one run."""
_PDF_MAGIC = b"%PDF-"
_LOCK = threading.RLock()
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
    """Whether `source` (bytes or a file path) starts like a PDF; reads at most 1 KiB of a file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:1024])
    else:
        try:
            with open(os.fspath(source), "rb") as file:
                head = file.read(1024)
        except OSError:
            return False
    return _PDF_MAGIC in head  # the header may follow a little junk, as PDF readers allow


def parse_page_ranges(text: str) -> list[int]:
    """"1-3,7" as [1, 2, 3, 7] (1-based, in the order given, each page once); ValueError with a sentence."""
    pages: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"{part!r} is not a page or a range like 1-3") from None
        if low < 1 or high < low:
            raise ValueError(f"{part!r} is not a page range: pages count from 1 and a range goes upwards")
        if high - low >= MAX_PAGES:
            raise ValueError(f"{part!r} asks for more than {MAX_PAGES} pages")
        pages.extend(n for n in range(low, high + 1) if n not in pages)
    if not pages:
        raise ValueError(f"{text!r} names no pages; write them like 1-3,7")
    return pages


class PdfDocument:
    """An open PDF. Use as a context manager; `render(n)` gives page n (1-based) as a `Page`."""

    def __init__(self, source: bytes | str | os.PathLike, name: str = "The PDF") -> None:
        self.name = name
        try:
            import pypdfium2 as pdfium
        except ImportError as exc:  # pragma: no cover - a dependency; only a broken install lacks it
            raise DocumentError(f"{name} is a PDF, and reading PDFs needs pypdfium2; install it with "
                                "pip install pypdfium2.") from exc
        data: Any = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
        with _LOCK:
            try:
                self._pdf = pdfium.PdfDocument(data)
                self.page_count = len(self._pdf)
            except pdfium.PdfiumError as exc:
                raise DocumentError(_open_error(name, getattr(exc, "err_code", None))) from None
            except (OSError, ValueError) as exc:
                raise DocumentError(f"{name} could not be opened ({exc}); check the file.") from None
        if self.page_count < 1:
            self.close()
            raise DocumentError(f"{name} has no pages; nothing to read.")

    def __enter__(self) -> PdfDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with _LOCK:
            pdf, self._pdf = getattr(self, "_pdf", None), None
            if pdf is not None:
                pdf.close()

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

    def render(self, number: int, dpi: float = DEFAULT_DPI, max_pixels: int = MAX_PAGE_PIXELS) -> Page:
        """Page `number` (1-based) as an RGB image at `dpi`, or lower when it would exceed `max_pixels`."""
        if not 1 <= number <= self.page_count:
            raise DocumentError(f"{self.name} has {self.page_count} pages; there is no page {number}.")
        import pypdfium2 as pdfium

        with _LOCK:
            try:
                page = self._pdf[number - 1]
                try:
                    width_pt, height_pt = page.get_size()
                    dpi = fitting_dpi(width_pt, height_pt, dpi, max_pixels)
                    bitmap = page.render(scale=dpi / 72)
                    image = bitmap.to_pil().convert("RGB")
                finally:
                    page.close()
            except pdfium.PdfiumError:
                raise DocumentError(f"Page {number} of {self.name} could not be rendered (the file is damaged); "
                                    "repair or re-export the PDF.") from None
        return Page(number, image, dpi)

    def pages(self, numbers: Sequence[int], dpi: float = DEFAULT_DPI) -> Iterator[Page]:
        for number in numbers:
            yield self.render(number, dpi)


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


def _open_error(name: str, code: int | None) -> str:
    if code == _PASSWORD_ERROR:
        return f"{name} is encrypted with a password; save an unprotected copy and try again."
    if code == _SECURITY_ERROR:
        return f"{name} uses a security handler that cannot be opened; save an unprotected copy and try again."
    return f"{name} is damaged or not a complete PDF and could not be opened; re-export or download it again."
