"""The layout prompt's answer read as cells: a JSON list of {"bbox": [x1, y1, x2, y2], "category", "text"}.

Boxes come in model-input pixels and leave in input-image pixels. When generation stops early (token limit,
repetition) or the model slips (an unescaped LaTeX backslash), the JSON is broken; we still return every cell
that parses on its own, so a long page loses its tail, not everything.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inputs.preprocessing import PreparedImage

_DECODER = json.JSONDecoder(strict=False)  # tolerate raw newlines and tabs inside strings
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_INVALID_ESCAPE = re.compile(r'(?<!\\)((?:\\\\)*)\\(?=[^"\\/bfnrtu])')
_CELL_KEYS = ("bbox", "category", "text")
_CELL_START = re.compile(r'\{\s*"(?:bbox|category|text)"\s*:')


def parse_cells(raw: str) -> tuple[list[dict], bool]:
    """(cells, complete): complete is True only when the whole answer was one well-formed JSON list."""
    text = _strip_fence(raw)
    for candidate in (text, _repair_escapes(text)):
        try:
            value = _DECODER.decode(candidate)
        except json.JSONDecodeError:
            continue
        cells = _cells_from_value(value)
        if cells is not None:
            return cells, True
    return _salvage(text), False


def _strip_fence(raw: str) -> str:
    match = _FENCE.match(raw)
    return match.group(1) if match else raw.strip()


def _repair_escapes(text: str) -> str:
    r"""Double lone backslashes that are not JSON escapes (LaTeX such as \alpha written unescaped)."""
    return _INVALID_ESCAPE.sub(lambda m: m.group(1) + "\\\\", text)


def _cells_from_value(value: Any) -> list[dict] | None:
    if isinstance(value, dict):
        if _looks_like_cell(value):
            return [value]
        lists = [v for v in value.values() if isinstance(v, list)]  # {"layout": [...]} and the like
        value = lists[0] if len(lists) == 1 else None
    if isinstance(value, list):
        return [item for item in value if _looks_like_cell(item)]
    return None


def _looks_like_cell(item: Any) -> bool:
    return isinstance(item, dict) and any(key in item for key in _CELL_KEYS)


def _salvage(text: str) -> list[dict]:
    """Every cell object in `text` that parses by itself, in order.

    Only positions that open a cell ('{' then a cell key) are tried, so the braces of LaTeX inside a
    truncated cell cost nothing.
    """
    cells: list[dict] = []
    position = 0
    while (match := _CELL_START.search(text, position)) is not None:
        obj, end = _decode_object(text, match.start())
        if _looks_like_cell(obj):
            cells.append(obj)
            position = end
        else:
            position = match.start() + 1
    return cells


def _decode_object(text: str, start: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        pass
    end = _object_end(text, start)
    if end is None:
        return None, start + 1
    try:
        return _DECODER.decode(_repair_escapes(text[start:end])), end
    except json.JSONDecodeError:
        return None, start + 1


def _object_end(text: str, start: int) -> int | None:
    """Index after the '}' closing the object at `start`, tracking strings; None when it never closes."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def map_cells_to_original(cells: list[dict], prepared: PreparedImage) -> list[dict]:
    """New cells whose bbox is in input-image pixels (ints, clamped, x1 <= x2, y1 <= y2)."""
    mapped = []
    for cell in cells:
        cell = dict(cell)
        box = as_box(cell.get("bbox"))
        if box is None:
            cell.pop("bbox", None)
        else:
            x1, y1 = prepared.to_original(box[0], box[1])
            x2, y2 = prepared.to_original(box[2], box[3])
            cell["bbox"] = [round(min(x1, x2)), round(min(y1, y2)), round(max(x1, x2)), round(max(y1, y2))]
        mapped.append(cell)
    return mapped


def as_box(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    numbers = []
    for item in value:
        if isinstance(item, bool):
            return None
        try:
            number = float(item)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    return numbers
