"""What every clipboard backend shares: the content it carries, its protocol, and its one error.

Backends are handlers on NormCap's model: each says whether it suits this platform and session
(`is_compatible`) and whether its library or tool is here (`is_installed`, with `install_hint` saying what to
install), and the clipboard tries them in order at call time, falling through to the next when one fails. A
handler that cannot carry HTML still carries the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dotocr.errors import DotOCRError


class ClipboardError(DotOCRError):
    """The clipboard cannot be reached; the message names what to install or start."""


@dataclass(frozen=True)
class ClipboardContent:
    """One copy, in every form at once: a paste target takes the richest form it reads."""

    text: str
    """Always there: what a plain-text editor pastes (a table as TSV, a formula as LaTeX)."""
    html: str | None = None
    """An HTML fragment (a real <table>, MathML), for spreadsheets and word processors; None for plain text."""


def as_content(content: str | ClipboardContent) -> ClipboardContent:
    """A plain string is text alone."""
    return content if isinstance(content, ClipboardContent) else ClipboardContent(content)


def html_document(fragment: str) -> str:
    """`fragment` as the whole UTF-8 document X11's text/html target carries (its charset said, so accents and
    CJK survive in LibreOffice and browsers alike)."""
    return f'<html><head><meta charset="utf-8"></head><body>\n{fragment}\n</body></html>'


@runtime_checkable
class ClipboardBackend(Protocol):
    """What the tray and `dotocr doctor` use: `get_clipboard()` returns one."""

    name: str

    def copy(self, content: str | ClipboardContent) -> bool:
        """Put `content` on the clipboard and return True; blank text leaves it alone and returns False."""
        ...

    def paste(self) -> str: ...


class ClipboardHandler(Protocol):
    """One way of reaching the clipboard, tried in turn by the clipboard."""

    name: str
    carries_html: bool
    install_hint: str
    """What to install when `is_installed()` says no, as a sentence's end ("install python-xlib ...")."""

    @staticmethod
    def is_compatible() -> bool:
        """This platform and session can use it (e.g. an X display for the X11 selection)."""
        ...

    @staticmethod
    def is_installed() -> bool:
        """Its library or tool is here."""
        ...

    def copy(self, content: ClipboardContent) -> None:
        """Put `content` on the clipboard (text always, HTML where it can); ClipboardError when it cannot."""
        ...

    def paste(self) -> str: ...
