"""The answer as the prompt mode promises it, the same for every engine, local or remote."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from .cells import map_cells_to_original, parse_cells
from .markdown import MarkdownStyle
from .scene_text import parse_scene_text

if TYPE_CHECKING:
    from PIL import Image

    from ..inputs.preprocessing import PreparedImage

PLAIN = MarkdownStyle()
MARKDOWN_PROMPTS = ("layout", "web")
"""The prompts whose answer is Markdown made from layout cells (dots.mocr's web parsing answers cells too)."""
_SVG = re.compile(r"<svg\b.*</svg>", re.DOTALL | re.IGNORECASE)


def format_answer(prompt: str, text: str, prepared: PreparedImage, picture: Image.Image,
                  style: MarkdownStyle = PLAIN) -> tuple[str, list[dict] | None]:
    """Plain text, Markdown from layout cells, or the cells as JSON; `text` is the model's, `prepared` maps its
    boxes back to the pixels of `picture`, the input image, and `style` says how cells become Markdown.
    dots.mocr's scene text becomes its lines (the instances, each with its corners, as cells) and its SVG answer
    the SVG alone (a code fence or words around it dropped)."""
    if prompt == "scene-text":
        found = parse_scene_text(text, prepared)
        return ("\n".join(cell["text"] for cell in found) if found else text.strip()), found or None
    if prompt == "svg":
        svg = _SVG.search(text)
        return (svg.group(0) if svg else text.strip()), None
    if prompt not in (*MARKDOWN_PROMPTS, "layout-json"):
        return text.strip(), None
    cells, _complete = parse_cells(text)
    cells = map_cells_to_original(cells, prepared)
    if prompt == "layout-json":
        return json.dumps(cells, ensure_ascii=False), cells
    return (style.render(cells, picture) if cells else text.strip()), cells


def with_codes(text: str, codes: str) -> str:
    """The answer with the codes' contents first (a line each, then a blank line), as a person reads a label."""
    if not codes:
        return text
    return codes + ("\n\n" + text if text else "\n\n")
