"""Transitional alias: the errors live in `dotocr.errors` (importing them must not load torch)."""

from ..errors import *  # noqa: F403
from ..errors import (
           DotOCRError,
           EngineBusyError,
           ImageError,
           ModelUnavailableError,
           OutOfMemoryError,
           RemoteEngineError,
)

__all__ = ["DotOCRError", "EngineBusyError", "ImageError", "ModelUnavailableError", "OutOfMemoryError",
           "RemoteEngineError"]
