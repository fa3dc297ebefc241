"""Layout cells as one Markdown document: formulas as display math, plain tables as Markdown tables, pictures
dropped, embedded or linked, page furniture optional."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cells import as_box
from .tables import html_table_to_markdown

if TYPE_CHECKING:
    from PIL import Image

FURNITURE = ("Page-header", "Page-footer")
"""Running heads and page numbers: left out of the Markdown when the page furniture is not wanted."""
PICTURE_MODES = ("drop", "embed", "link")


@dataclass(frozen=True)
class MarkdownStyle:
    """How layout cells become Markdown, chosen per call (the CLI's --pictures and --no-page-furniture)."""

    furniture: bool = True
    """Keep page headers and footers."""
    pictures: str = "drop"
    """One of PICTURE_MODES: drop, embed as a PNG data URL, or link to a saved crop."""
    save_picture: Callable[[Image.Image, int], str] | None = None
    """For "link": stores the n-th crop (1-based) and returns the path the Markdown links to."""

    def render(self, cells: list[dict], picture: Image.Image) -> str:
        """The cells as Markdown; picture cells are cut from `picture`, the input image (boxes in its pixels)."""
        return cells_to_markdown(cells, furniture=self.furniture,
                                 picture=picture_markdown(picture, self.pictures, self.save_picture))


def cells_to_markdown(cells: list[dict], *, furniture: bool = True,
                      picture: Callable[[dict], str | None] | None = None) -> str:
    """The cells as one Markdown document in the given reading order.

    Formulas become display math, plain HTML tables Markdown tables (others stay HTML), everything else its
    text. Pictures are left out unless `picture` turns a picture cell into Markdown (see `picture_markdown`);
    `furniture=False` also leaves out page headers and footers.
    """
    blocks = []
    for cell in cells:
        category = str(cell.get("category", "Text"))
        text = cell.get("text")
        if not furniture and category in FURNITURE:
            continue
        if category == "Picture":
            shown = picture(cell) if picture is not None else None
            if shown:
                blocks.append(shown)
            continue
        if not isinstance(text, str) or not text.strip():
            continue
        if category == "Formula":
            blocks.append(_formula_markdown(text))
        elif category == "Table":
            blocks.append(html_table_to_markdown(text) or text.strip())
        else:
            blocks.append(text.strip())
    return "\n\n".join(blocks)


_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _formula_markdown(latex: str) -> str:
    """Display math for a formula; text that mixes prose and inline math ("$a$ and $b$") stays as it is."""
    body = latex.strip()
    inner = _strip_math_delimiters(body)
    if inner is not None:
        return f"$$\n{inner}\n$$"
    if any(opening in body for opening, _closing in _DELIMITERS):
        return body  # several formulas with text between them: already Markdown with inline math
    return f"$$\n{body}\n$$"


def _strip_math_delimiters(body: str) -> str | None:
    """The LaTeX inside `body` when all of it is one delimited formula, else None."""
    for opening, closing in _DELIMITERS:
        if body.startswith(opening) and body.endswith(closing) and len(body) >= len(opening) + len(closing):
            inner = body[len(opening):len(body) - len(closing)]
            if closing not in inner and opening not in inner:
                return inner.strip()
    return None


def picture_markdown(image: Image.Image, mode: str, save: Callable[[Image.Image, int], str] | None = None,
                     ) -> Callable[[dict], str | None] | None:
    """What `cells_to_markdown` does with a picture cell, whose bbox is in `image`'s pixels.

    "drop": nothing (None). "embed": the crop as a PNG data URL, as dots.ocr's own converter writes it.
    "link": `save(crop, n)` stores the n-th crop (1-based) and returns the path the Markdown links to.
    """
    if mode == "drop":
        return None
    if mode not in PICTURE_MODES:
        raise ValueError(f"pictures must be one of {', '.join(PICTURE_MODES)}, not {mode!r}")
    if mode == "link" and save is None:
        raise ValueError("linking pictures needs a place to save them")
    count = 0

    def show(cell: dict) -> str | None:
        nonlocal count
        box = as_box(cell.get("bbox"))
        if box is None:
            return None
        x1, y1, x2, y2 = (round(v) for v in box)
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(image.width, x2), min(image.height, y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            return None
        crop = image.crop((x1, y1, x2, y2))
        count += 1
        if mode == "link":
            assert save is not None
            return f"![Picture {count}]({save(crop, count)})"
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG")
        return f"![Picture {count}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"

    return show
