"""dots.mocr's scene-text answer read as cells: one "(x1, y1), (x2, y2), (x3, y3), (x4, y4) text" per instance.

The pattern is the official parser's (dots_mocr/utils/layout_utils.py `parse_scene_text_output`): four corners in
model-input pixels, then the text up to the next corner or the end. The corners leave in input-image pixels, with
the box around them, so a scene-text cell looks like a layout cell (bbox, category, text) plus its `points`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..inputs.preprocessing import PreparedImage

_POINT = r"\(\s*(\d+)\s*,\s*(\d+)\s*\)"
_INSTANCE = re.compile(r"\s*,\s*".join([_POINT] * 4) + r"\s*(.*?)(?=\(\s*\d+\s*,\s*\d+\s*\)|\Z)", re.DOTALL)


def parse_scene_text(raw: str, prepared: PreparedImage) -> list[dict]:
    """The instances in `raw`, corners mapped to the input image's pixels; [] when there are none."""
    cells = []
    for match in _INSTANCE.finditer(raw):
        text = match.group(9).strip()
        if not text:
            continue
        numbers = [int(match.group(index)) for index in range(1, 9)]
        points = []
        for x, y in zip(numbers[0::2], numbers[1::2], strict=True):
            points.extend(round(value) for value in prepared.to_original(x, y))
        xs, ys = points[0::2], points[1::2]
        cells.append({"bbox": [min(xs), min(ys), max(xs), max(ys)], "points": points, "category": "Text",
                      "text": text})
    return cells
