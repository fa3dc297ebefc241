"""Bounding boxes: the one rule every front end and the engine apply to a box a person gives.

A box is four finite numbers x1, y1, x2, y2 in input-image pixels, none negative, with x2 > x1 and y2 > y1.
The CLI's `--bbox`, the server's `bbox` form field and `ocr(bbox=...)` all check it here, so they accept and
refuse the same boxes with the same sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from dotocr.errors import DotOCRError

Box = tuple[float, float, float, float]

_SEPARATORS = re.compile(r"[,\s]+")


def parse_box(text: str, shown: str | None = None) -> Box:
    """"x1,y1,x2,y2" (commas and/or spaces) as a checked box; `shown` names it in the error sentence."""
    shown = shown or repr(text)
    try:
        values = [float(part) for part in _SEPARATORS.split(text.strip()) if part]
    except ValueError:
        raise DotOCRError(_not_four(shown)) from None
    return check_box(values, shown)


def check_box(values: Sequence[Any], shown: str | None = None) -> Box:
    """`values` as a box if it is one by the rule above, else `DotOCRError` naming what is wrong."""
    shown = shown or f"The box {_text(values)}"
    x1, y1, x2, y2 = four_numbers(values, shown)
    if min(x1, y1, x2, y2) < 0:
        raise DotOCRError(f"{shown} has a negative coordinate; boxes are in image pixels, counted from 0.")
    if not (x2 > x1 and y2 > y1):
        raise DotOCRError(f"{shown} is empty: it needs x2 > x1 and y2 > y1.")
    return x1, y1, x2, y2


def four_numbers(values: Sequence[Any], shown: str | None = None) -> Box:
    """The shape alone: exactly four finite numbers (not bools), as floats."""
    shown = shown or f"The box {_text(values)}"
    try:
        items = list(values)
    except TypeError:
        raise DotOCRError(_not_four(shown)) from None
    if len(items) != 4 or not all(_is_finite_number(v) for v in items):
        raise DotOCRError(_not_four(shown))
    return float(items[0]), float(items[1]), float(items[2]), float(items[3])


def _not_four(shown: str) -> str:
    return f"{shown} is not four numbers x1,y1,x2,y2; give the box in image pixels, e.g. 10,20,300,60."


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(values: Any) -> str:
    try:
        return "(" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in values) + ")"
    except TypeError:
        return repr(values)
