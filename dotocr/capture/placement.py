"""Where a small window goes next to a selection: on the selection's monitor, beside it, never off-screen.

Everything is in physical, desktop-absolute pixels, as the overlay and mss speak them (per-monitor DPI
awareness on Windows makes Tk speak them too). The rule is pure arithmetic, so it is tested without a display;
only `work_area` asks the system (Windows: the monitor minus its taskbar).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from dotocr.capture.screens import Monitor, windows_monitor_handle

MARGIN = 8
"""Physical pixels kept free between the window and the monitor's edge (at 100 % scaling)."""


@dataclass(frozen=True)
class Rect:
    """A desktop-absolute rectangle in physical pixels."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @classmethod
    def of(cls, monitor: Monitor) -> Rect:
        return cls(monitor.left, monitor.top, monitor.width, monitor.height)

    def inset(self, by: int) -> Rect:
        """Smaller by `by` on every side, never below 1x1."""
        by = max(0, min(by, (self.width - 1) // 2, (self.height - 1) // 2))
        return Rect(self.left + by, self.top + by, self.width - 2 * by, self.height - 2 * by)


def monitor_at(x: int, y: int, monitors: Sequence[Monitor]) -> Monitor:
    """The monitor holding the point; outside all of them (a gap between monitors), the nearest one."""
    if not monitors:
        raise ValueError("There is no monitor to place a window on.")

    def distance(m: Monitor) -> int:
        dx = max(m.left - x, 0, x - (m.right - 1))
        dy = max(m.top - y, 0, y - (m.bottom - 1))
        return dx * dx + dy * dy

    return min(monitors, key=distance)


def place_near(anchor: Rect, area: Rect, width: int, height: int, gap: int) -> Rect:
    """A `width` x `height` window beside `anchor`, wholly inside `area` (shrunk to fit it if it must be).

    Below the anchor, left edges aligned, when it fits; else above it; else to its right, then its left, tops
    aligned; else over the anchor at the bottom of the area (a selection filling the whole monitor)."""
    width, height = max(1, min(width, area.width)), max(1, min(height, area.height))

    def clamp(value: int, low: int, high: int) -> int:
        return max(low, min(value, high))

    x = clamp(anchor.left, area.left, area.right - width)
    y = clamp(anchor.top, area.top, area.bottom - height)
    if anchor.bottom + gap + height <= area.bottom:
        return Rect(x, max(area.top, anchor.bottom + gap), width, height)
    if anchor.top - gap - height >= area.top:
        return Rect(x, min(area.bottom - height, anchor.top - gap - height), width, height)
    if anchor.right + gap + width <= area.right:
        return Rect(max(area.left, anchor.right + gap), y, width, height)
    if anchor.left - gap - width >= area.left:
        return Rect(min(area.right - width, anchor.left - gap - width), y, width, height)
    return Rect(x, area.bottom - height, width, height)


class _MonitorInfo(ctypes.Structure):
    _fields_ = [("cbSize", ctypes.c_uint32), ("rcMonitor", ctypes.c_long * 4), ("rcWork", ctypes.c_long * 4),
                ("dwFlags", ctypes.c_uint32)]


def work_area(monitor: Monitor) -> Rect:
    """The part of the monitor windows may use: on Windows without the taskbar; elsewhere the whole monitor
    (X11 reports one work area for the whole desktop, which says nothing about each monitor)."""
    whole = Rect.of(monitor)
    if sys.platform != "win32":
        return whole
    handle = windows_monitor_handle(monitor)
    if handle is None:
        return whole
    try:
        user32 = ctypes.windll.user32  # type: ignore[attr-defined]
        user32.GetMonitorInfoW.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MonitorInfo)]
        info = _MonitorInfo()
        info.cbSize = ctypes.sizeof(_MonitorInfo)
        if not user32.GetMonitorInfoW(handle, ctypes.byref(info)):
            return whole
        left, top, right, bottom = info.rcWork
        work = Rect(left, top, right - left, bottom - top)
        return work if work.width > 0 and work.height > 0 else whole
    except (AttributeError, OSError):
        return whole
