"""The answer as the prompt mode promises it, the same for every engine, local or remote."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .cells import map_cells_to_original, parse_cells
from .markdown import cells_to_markdown

if TYPE_CHECKING:
    from ..inputs.preprocessing import PreparedImage


def format_answer(prompt: str, text: str, prepared: PreparedImage) -> tuple[str, list[dict] | None]:
    """Plain text, Markdown from layout cells, or the cells as JSON; `text` is the model's, `prepared` maps its
    boxes back to the input's pixels."""
    if prompt not in ("layout", "layout-json"):
        return text.strip(), None
    cells, _complete = parse_cells(text)
    cells = map_cells_to_original(cells, prepared)
    if prompt == "layout-json":
        return json.dumps(cells, ensure_ascii=False), cells
    return (cells_to_markdown(cells) if cells else text.strip()), cells
