"""QR codes and bar codes, read with zxing-cpp before the model: milliseconds, and no model for a crop that is
only a code.

"Just a code" is decided from the picture, never guessed from the content: each code's box is grown by its quiet
zone (and, for a linear code, by the line of digits printed under it), and what lies outside those boxes must be
blank: fewer than `STRAY_PIXELS` pixels differ from the crop's background (its most common grey) by more than
`INK_CONTRAST` grey levels. A caption, a line of text, a logo or a window border beside the code is ink, so the
model reads the crop too and the codes come first. zxing-cpp and this test together take well under 100 ms for
a 1280 x 800 screenshot on one core (tests/test_codes.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

INK_CONTRAST = 48
"""Grey levels (of 255) by which a pixel must differ from the background to count as ink: above JPEG noise and
anti-aliased gradients, below any text a person can read."""
STRAY_PIXELS = 24
"""Ink pixels outside the codes that a crop may hold and still be "just codes": a few specks, not a letter."""
MATRIX_MARGIN = 0.2
"""A 2D code's quiet zone, as a share of its side (QR asks 4 modules: 19 % of a 21-module code)."""
LINEAR_MARGIN_X = 0.15
"""A linear code's quiet zone left and right, as a share of its width (EAN-13: 11 modules of 95, and the first
digit printed there)."""
LINEAR_TEXT_BELOW = 0.2
"""The human-readable line under a linear code, as a share of its width."""

_MATRIX = frozenset({"QRCode", "MicroQRCode", "RMQRCode", "DataMatrix", "Aztec", "PDF417", "MaxiCode",
                     "CompactPDF417", "MicroPDF417", "AztecCode", "AztecRune", "QRCodeModel1", "QRCodeModel2"})


@dataclass(frozen=True)
class Code:
    """One code found in the image."""

    text: str
    format: str
    """zxing-cpp's name for the symbology: QRCode, EAN13, Code128, DataMatrix, ..."""
    bbox: tuple[int, int, int, int]
    """x1, y1, x2, y2 in the input image's pixels."""

    def to_json_dict(self) -> dict[str, Any]:
        return {"text": self.text, "format": self.format, "bbox": list(self.bbox)}


@dataclass(frozen=True)
class CodeReading:
    """What zxing-cpp found, and whether the crop holds anything else to read."""

    codes: tuple[Code, ...] = ()
    alone: bool = False
    """The crop is only these codes: the model need not read it."""
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """The codes' contents, one per line, in reading order."""
        return "\n".join(code.text for code in self.codes)


NO_CODES = CodeReading()


def read_codes(image: Image.Image) -> CodeReading:
    """Every QR code and bar code in `image` (an RGB picture), top to bottom, left to right.

    zxing-cpp is imported on first use; where it is missing or fails, the reading is empty and the model reads
    the image as before (the failure is logged once per call, never raised: codes are a bonus, not the job).
    """
    started = time.perf_counter()
    grey = image.convert("L")
    try:
        import zxingcpp

        found = zxingcpp.read_barcodes(grey)
    except Exception as exc:  # ImportError, or a reader error on a strange picture
        log.warning("Reading codes failed: %s", exc)
        return CodeReading(seconds=time.perf_counter() - started)
    codes = [_code(item, grey.size) for item in found if item.text]
    codes.sort(key=lambda code: (code.bbox[1], code.bbox[0]))
    alone = bool(codes) and _only_codes(grey, codes)
    return CodeReading(tuple(codes), alone, time.perf_counter() - started)


def _code(item: Any, size: tuple[int, int]) -> Code:
    position = item.position
    corners = (position.top_left, position.top_right, position.bottom_right, position.bottom_left)
    xs = [point.x for point in corners]
    ys = [point.y for point in corners]
    width, height = size
    box = (max(0, min(xs)), max(0, min(ys)), min(width, max(xs) + 1), min(height, max(ys) + 1))
    return Code(item.text, item.format.name, box)


def _only_codes(grey: Image.Image, codes: list[Code]) -> bool:
    """True when nothing but the codes (with their quiet zones) shows: see the module's docstring."""
    from PIL import ImageDraw

    histogram = grey.histogram()
    background = max(range(256), key=histogram.__getitem__)
    blanked = grey.copy()
    draw = ImageDraw.Draw(blanked)
    for code in codes:
        draw.rectangle(_grown(code, grey.size), fill=background)
    lut = [255 if abs(level - background) > INK_CONTRAST else 0 for level in range(256)]
    return blanked.point(lut).histogram()[255] < STRAY_PIXELS


def _grown(code: Code, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The code's box with its quiet zone, and for a linear code the digits under it, inside the image."""
    x1, y1, x2, y2 = code.bbox
    width, height = x2 - x1, y2 - y1
    if code.format in _MATRIX:
        margin = round(MATRIX_MARGIN * max(width, height)) + 2
        left = right = top = margin
        bottom = margin
    else:
        left = right = round(LINEAR_MARGIN_X * width) + 2
        top = round(0.05 * width) + 2
        bottom = round(LINEAR_TEXT_BELOW * width) + 2
    image_width, image_height = size
    return (max(0, x1 - left), max(0, y1 - top), min(image_width - 1, x2 + right), min(image_height - 1, y2 + bottom))
