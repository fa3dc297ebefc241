"""A bound on the decoded images the waiting room holds, so a long line is bounded by memory, not by count.

Every admitted request holds its decoded image (3 bytes a pixel) from upload until its generation ends; a
line of 128 is fine for pages and screenshots but not for 128 images of 67 megapixels. Each request reserves
its image's pixels before it is decoded (the size is read from the header, which costs nothing) and gives them
back when it is done; a request that would pass the budget is refused with 503, like a full line.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable

from PIL import Image

MAX_HELD_PIXELS = 512_000_000
"""About 1.5 GB of decoded RGB: 64 A4 pages at 200 DPI take 250 megapixels, a 4K screenshot 8."""


class PixelBudget:
    def __init__(self, limit: int = MAX_HELD_PIXELS) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def reserve(self, pixels: int) -> Callable[[], None] | None:
        """A function that gives the pixels back, or None when they do not fit now.

        One request alone always fits (the image size limits bound it), so nothing is refused forever.
        """
        with self._lock:
            if self.held and self.held + pixels > self.limit:
                return None
            self.held += pixels
        returned = False

        def give_back() -> None:
            nonlocal returned
            with self._lock:
                if not returned:
                    returned = True
                    self.held -= pixels

        return give_back


def declared_pixels(data: bytes) -> int:
    """Width x height as the image's header states them (0 when it cannot be told: decoding decides then)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Exception:
        return 0
    return max(0, width) * max(0, height)
