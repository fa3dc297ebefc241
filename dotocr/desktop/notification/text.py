"""Pure text shaping for notifications: strings fitted to each platform's limits.

Lengths are counted in UTF-16 code units because that is what Windows' fixed-size balloon buffers
hold: an emoji outside the Basic Multilingual Plane takes two of them.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "\u2026"
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
