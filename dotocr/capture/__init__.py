"""Screens, DPI awareness, the region-selection overlay, and where a window goes beside a selection.

The overlay needs tkinter, so it is imported on first use of `RegionSelector`; the rest imports
cleanly anywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dotocr.capture.dpi import BASE_DPI, enable_dpi_awareness, monitor_dpi
from dotocr.capture.placement import Rect, monitor_at, place_near, work_area
from dotocr.capture.region import Region
from dotocr.capture.screens import CaptureError, Monitor, grab_all, grab_rect, list_monitors

if TYPE_CHECKING:
    from dotocr.capture.overlay import RegionSelector

__all__ = [
    "BASE_DPI",
    "CaptureError",
    "Monitor",
    "Rect",
    "Region",
    "RegionSelector",
    "enable_dpi_awareness",
    "grab_all",
    "grab_rect",
    "list_monitors",
    "monitor_at",
    "monitor_dpi",
    "place_near",
    "work_area",
]


def __getattr__(name: str) -> Any:
    if name == "RegionSelector":
        from dotocr.capture.overlay import RegionSelector

        return RegionSelector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
