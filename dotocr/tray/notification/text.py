"""Pure text shaping for notifications: fit platform limits, and the words shown after an OCR.

Lengths are counted in UTF-16 code units because that is what Windows' fixed-size balloon buffers
hold: an emoji outside the Basic Multilingual Plane takes two of them.
"""

from __future__ import annotations

import re
import unicodedata

ELLIPSIS = "\u2026"
PREVIEW_CHARS = 200
# Windows NOTIFYICONDATAW: szInfoTitle[64] and szInfo[256], each including the terminating NUL.
WINDOWS_TITLE_MAX = 63
WINDOWS_TEXT_MAX = 255
# Cut at the last space only when that keeps at least this share of the allowed length.
_WORD_BOUNDARY_SHARE = 0.6


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _joins_previous(char: str) -> bool:
    """True for characters that belong to the one before (combining marks, ZWJ, variation selectors)."""
    return unicodedata.category(char) in ("Mn", "Me") or char in ("\u200d", "\ufe0f", "\ufe0e") or (
        "\U0001f3fb" <= char <= "\U0001f3ff")  # skin-tone modifiers


def truncate(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-16 units, else a shorter prefix ending in an ellipsis."""
    if limit <= 0:
        return ""
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(ELLIPSIS)
    cut, used = 0, 0
    for char in text:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > budget:
            break
        used += size
        cut += 1
    # never split a character from the marks that join it, nor leave a dangling joiner
    while 0 < cut < len(text) and _joins_previous(text[cut]):
        cut -= 1
    head = text[:cut].rstrip("\u200d")
    if not text[cut].isspace():
        space = max(head.rfind(" "), head.rfind("\n"))
        if space >= budget * _WORD_BOUNDARY_SHARE:
            head = head[:space]
    return head.rstrip() + ELLIPSIS


def fit_notification(title: str, text: str, *, title_max: int, text_max: int) -> tuple[str, str]:
    """Both strings shortened to their limits (UTF-16 units), at a word boundary where reasonable."""
    return truncate(title, title_max), truncate(text, text_max)


def _preview(text: str) -> str:
    """Lines trimmed, runs of spaces and of blank lines collapsed: a toast has no room for layout."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def summarize_result(text: str, seconds: float) -> tuple[str, str]:
    """(title, body) for the toast after a capture: what was copied and how long it took."""
    if not text.strip():
        return f"Nothing recognised \u00b7 {_seconds(seconds)}", "The clipboard was left unchanged."
    count = len(text)
    noun = "character" if count == 1 else "characters"
    title = f"Copied {count:,} {noun} \u00b7 {_seconds(seconds)}"
    return title, preview(text)


def preview(text: str) -> str:
    """The start of a result as a toast body shows it."""
    return truncate(_preview(text), PREVIEW_CHARS)


def error_sentence(exc: BaseException) -> str:
    """What a toast says about a failure: a DotOCRError already is one sentence; anything else is a bug,
    said plainly (its traceback goes to the log)."""
    from dotocr.errors import DotOCRError

    if isinstance(exc, DotOCRError):
        return str(exc)
    return f"Unexpected {type(exc).__name__}: {exc}. The log has the details."
