"""Errors a person can act on, shared by every part of dotocr (light: importing it loads no torch).

Every message is one sentence naming the problem and the fix.
"""

from __future__ import annotations


class DotOCRError(Exception):
    """Base class: front ends print `str(error)` and never a traceback."""


class ImageError(DotOCRError):
    """The input is not an image we can read (not an image, truncated, empty, too large)."""


class ModelUnavailableError(DotOCRError):
    """The checkpoint could not be found, downloaded or loaded."""


class OutOfMemoryError(DotOCRError):
    """The GPU ran out of memory even after one retry at a smaller image size."""


class PromptTooLongError(DotOCRError):
    """The instruction is longer, in tokens, than the caller allows."""


class RemoteEngineError(DotOCRError):
    """A remote OpenAI-compatible server could not be reached or answered with an error."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line for a sentence of ours: its first non-empty line, or its type's name.

    Library messages run over many lines (tracebacks, hints); the first says what failed.
    """
    for line in str(exc).splitlines():
        text = " ".join(line.split())
        if text:
            return text[:limit]
    return type(exc).__name__
