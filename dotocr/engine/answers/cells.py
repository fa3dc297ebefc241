"""The layout prompt's answer read as cells: a JSON list of {"bbox": [x1, y1, x2, y2], "category", "text"}.

Boxes come in model-input pixels and leave in input-image pixels. When generation stops early (token limit,
repetition) or the model slips (an unescaped LaTeX backslash), the JSON is broken; we still return every cell
that parses on its own, so a long page loses its tail, not everything.

Total and linear: whatever the model (or a remote server) wrote, the answer is a list of cells, possibly empty,
never an exception, in time linear in its length. Objects nested thousands deep, numbers of thousands of digits
and lone surrogates (`\ud800`, which no UTF-8 answer can carry) are refused or replaced, and the salvage finds
every object's end in one pass over the text and spends at most SALVAGE_PASSES times its length decoding.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inputs.preprocessing import PreparedImage

_DECODER = json.JSONDecoder(strict=False)  # tolerate raw newlines and tabs inside strings
_FENCE_MARK = "```"
_INVALID_ESCAPE = re.compile(r'(?<!\\)((?:\\\\)*)\\(?=[^"\\/bfnrtu])')
_CELL_KEYS = ("bbox", "category", "text")
_CELL_START = re.compile(r'\{\s*"(?:bbox|category|text)"\s*:')
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[{}]', re.DOTALL)
"""A JSON string (to its closing quote, or to the end of the text when it never closes), or a brace."""
_SURROGATE = re.compile("[\ud800-\udfff]")
SALVAGE_PASSES = 8
"""Decoding work the salvage may do, in lengths of the answer: nested broken objects would otherwise cost the
square of it (200 KB of `{"text": {` took 108 s)."""
_DECODE_ERRORS = (ValueError, RecursionError)
"""What decoding model text raises: malformed JSON, a number of thousands of digits, nesting past the stack."""


def parse_cells(raw: str) -> tuple[list[dict], bool]:
    """(cells, complete): complete is True only when the whole answer was one well-formed JSON list."""
    text = _strip_fence(raw)
    for candidate in (text, _repair_escapes(text)):
        try:
            value = _DECODER.decode(candidate)
        except _DECODE_ERRORS:
            continue
        cells = _cells_from_value(value)
        if cells is not None:
            return cells, True
    return _salvage(text), False


def _strip_fence(raw: str) -> str:
    """The answer without a Markdown code fence around it (```json ... ```), by string steps, not a regex: a
    pattern for it backtracks for minutes over a long run of spaces."""
    text = raw.strip()
    if len(text) >= 2 * len(_FENCE_MARK) and text.startswith(_FENCE_MARK) and text.endswith(_FENCE_MARK):
        body = text[len(_FENCE_MARK):-len(_FENCE_MARK)]
        newline = body.find("\n")
        label = body[:newline] if newline >= 0 else ""
        if newline >= 0 and (not label.strip() or label.strip().isalpha()):
            body = body[newline + 1:]
        return body.strip()
    return text


def _repair_escapes(text: str) -> str:
    r"""Double lone backslashes that are not JSON escapes (LaTeX such as \alpha written unescaped)."""
    return _INVALID_ESCAPE.sub(lambda m: m.group(1) + "\\\\", text)


def _cells_from_value(value: Any) -> list[dict] | None:
    if isinstance(value, dict):
        if _looks_like_cell(value):
            return [_clean_cell(value)]
        lists = [v for v in value.values() if isinstance(v, list)]  # {"layout": [...]} and the like
        value = lists[0] if len(lists) == 1 else None
    if isinstance(value, list):
        return [_clean_cell(item) for item in value if _looks_like_cell(item)]
    return None


def without_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate (a `\\ud800` escape in JSON decodes to one) as U+FFFD: no UTF-8 answer,
    file or terminal can carry one."""
    return _SURROGATE.sub("\ufffd", text)


def _looks_like_cell(item: Any) -> bool:
    return isinstance(item, dict) and any(key in item for key in _CELL_KEYS)


def _clean_cell(cell: dict) -> dict:
    """The cell's own keys only, its strings free of lone surrogates: a box that is a list of four, a category and
    a text that are strings. Anything else the model put there is dropped (it could nest thousands deep)."""
    clean: dict[str, Any] = {}
    box = cell.get("bbox")
    if isinstance(box, (list, tuple)) and len(box) == 4:
        clean["bbox"] = [item if isinstance(item, (int, float, str)) else None for item in box]
    for key in ("category", "text"):
        value = cell.get(key)
        if isinstance(value, str):
            clean[key] = without_lone_surrogates(value)
    return clean


def _salvage(text: str) -> list[dict]:
    """Every cell object in `text` that parses by itself, in order.

    Only positions that open a cell ('{' then a cell key) are tried, each up to its closing brace as one pass over
    the text finds it (strings skipped whole, so the braces of LaTeX inside a cell cost nothing); an object that
    never closes is not tried at all. A cell found is taken whole; the objects inside a broken one are tried in
    turn, until SALVAGE_PASSES lengths of the text have been decoded.
    """
    starts = [match.start() for match in _CELL_START.finditer(text)]
    if not starts:
        return []
    ends = _closing_braces(text, starts[0])
    budget = SALVAGE_PASSES * len(text)
    cells: list[dict] = []
    taken_to = 0
    for start in starts:
        end = ends.get(start)
        if start < taken_to or end is None:
            continue
        budget -= 2 * (end - start)
        if budget < 0:
            break
        cell = _decode_object(text[start:end])
        if _looks_like_cell(cell):
            cells.append(_clean_cell(cell))
            taken_to = end
    return cells


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """For each '{' from `start` on, outside strings, the index after the '}' that closes it (closed ones only)."""
    ends: dict[int, int] = {}
    open_at: list[int] = []
    for token in _TOKEN.finditer(text, start):
        char = text[token.start()]
        if char == "{":
            open_at.append(token.start())
        elif char == "}" and open_at:
            ends[open_at.pop()] = token.end()
    return ends


def _decode_object(span: str) -> Any:
    for candidate in (span, _repair_escapes(span)):
        try:
            return _DECODER.decode(candidate)
        except _DECODE_ERRORS:
            continue
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
        except (TypeError, ValueError, OverflowError):  # a 400-digit integer is too large for a float
            return None
        if not math.isfinite(number):
            return None
        numbers.append(number)
    return numbers
