"""The protocol every clipboard backend follows, and its one error."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dotocr.errors import DotOCRError


class ClipboardError(DotOCRError):
    """The clipboard cannot be reached; the message names what to install or start."""


@runtime_checkable
class ClipboardBackend(Protocol):
    name: str

    @staticmethod
    def is_compatible() -> bool: ...

    def copy(self, text: str) -> bool:
        """Put `text` on the clipboard and return True; blank text leaves it alone and returns False."""
        ...

    def paste(self) -> str: ...
