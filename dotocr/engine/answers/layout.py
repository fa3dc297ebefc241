"""Reading the layout prompt's answer: JSON cells, their boxes in input pixels, and Markdown.

The model answers the layout prompt with a JSON list of cells, each {"bbox": [x1, y1, x2, y2],
"category": ..., "text": ...}, boxes in model-input pixels. When generation stops early (token limit,
repetition) or the model slips (an unescaped LaTeX backslash), the JSON is broken; we still return
every cell that parses on its own, so a long page loses its tail, not everything.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from dotocr.engine.inputs.preprocessing import PreparedImage

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
        box = _as_box(cell.get("bbox"))
        if box is None:
            cell.pop("bbox", None)
        else:
            x1, y1 = prepared.to_original(box[0], box[1])
            x2, y2 = prepared.to_original(box[2], box[3])
            cell["bbox"] = [round(min(x1, x2)), round(min(y1, y2)), round(max(x1, x2)), round(max(y1, y2))]
        mapped.append(cell)
    return mapped


def _as_box(value: Any) -> list[float] | None:
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


FURNITURE = ("Page-header", "Page-footer")
"""Running heads and page numbers: left out of the Markdown when the page furniture is not wanted."""
PICTURE_MODES = ("drop", "embed", "link")


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
        box = _as_box(cell.get("bbox"))
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


def html_table_to_markdown(html: str) -> str | None:
    """A Markdown table for a plain HTML table; None when Markdown cannot hold it (spans, nesting, prose)."""
    reader = _TableReader()
    try:
        reader.feed(html)
        reader.close()
    except _NotPlain:
        return None
    rows = [row for row in reader.rows if row]
    if not rows or reader.outside_text.strip():
        return None
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    lines = [_markdown_row(rows[0]), "| " + " | ".join(["---"] * width) + " |"]
    lines.extend(_markdown_row(row) for row in rows[1:])
    return "\n".join(lines)


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


class _NotPlain(Exception):
    """The table uses something a Markdown table cannot express."""


class _TableReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.outside_text = ""
        self._cell: list[str] | None = None
        self._tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._tables += 1
            if self._tables > 1:
                raise _NotPlain
        elif tag == "tr":
            self._finish_cell()
            self.rows.append([])
        elif tag in ("td", "th"):
            for name, value in attrs:
                if name in ("rowspan", "colspan") and (value or "1").strip() not in ("", "1"):
                    raise _NotPlain
            self._finish_cell()
            if not self.rows:
                self.rows.append([])
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "tr"):
            self._finish_cell()
        elif tag == "table":
            self._finish_cell()
            self._tables -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        else:
            self.outside_text += data

    def _finish_cell(self) -> None:
        if self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None


def format_answer(prompt: str, text: str, prepared: PreparedImage) -> tuple[str, list[dict] | None]:
    """The answer as the prompt mode promises it: plain text, Markdown from layout cells, or the cells as JSON.

    Every engine, local or remote, post-processes its model's text here, so the result is the same.
    """
    if prompt not in ("layout", "layout-json"):
        return text.strip(), None
    cells, _complete = parse_cells(text)
    cells = map_cells_to_original(cells, prepared)
    if prompt == "layout-json":
        return json.dumps(cells, ensure_ascii=False), cells
    return (cells_to_markdown(cells) if cells else text.strip()), cells
