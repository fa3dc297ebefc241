"""The answer as the prompt mode promises it, the same for every engine, local or remote."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .cells import map_cells_to_original, parse_cells
from .markdown import MarkdownStyle

if TYPE_CHECKING:
    from PIL import Image

    from ..inputs.preprocessing import PreparedImage

PLAIN = MarkdownStyle()


def format_answer(prompt: str, text: str, prepared: PreparedImage, picture: Image.Image,
                  style: MarkdownStyle = PLAIN) -> tuple[str, list[dict] | None]:
    """Plain text, Markdown from layout cells, or the cells as JSON; `text` is the model's, `prepared` maps its
    boxes back to the pixels of `picture`, the input image, and `style` says how cells become Markdown."""
    if prompt not in ("layout", "layout-json"):
        return text.strip(), None
    cells, _complete = parse_cells(text)
    cells = map_cells_to_original(cells, prepared)
    if prompt == "layout-json":
        return json.dumps(cells, ensure_ascii=False), cells
    return (style.render(cells, picture) if cells else text.strip()), cells
