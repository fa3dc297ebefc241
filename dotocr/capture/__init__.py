"""Screens, DPI awareness and the region-selection overlay.

The overlay needs tkinter, so it is imported on first use of `RegionSelector`; the rest imports
cleanly anywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dotocr.capture.dpi import enable_dpi_awareness
from dotocr.capture.region import Region
from dotocr.capture.screens import CaptureError, Monitor, grab_all, grab_rect, list_monitors

if TYPE_CHECKING:
    from dotocr.capture.overlay import RegionSelector

__all__ = [
    "CaptureError",
    "Monitor",
    "Region",
    "RegionSelector",
    "enable_dpi_awareness",
    "grab_all",
    "grab_rect",
    "list_monitors",
]


def __getattr__(name: str) -> Any:
    if name == "RegionSelector":
        from dotocr.capture.overlay import RegionSelector

        return RegionSelector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
