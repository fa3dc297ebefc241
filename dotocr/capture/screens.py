"""Monitors and screenshots in physical, desktop-absolute pixels (left/top may be negative on
Windows when a monitor sits left of or above the primary one)."""

from __future__ import annotations

import ctypes
import sys
from dataclasses import asdict, dataclass
from typing import Any

import mss
from PIL import Image

from dotocr.errors import DotOCRError


class CaptureError(DotOCRError):
    """The screen could not be read; the message is one sentence a person can act on."""


@dataclass(frozen=True)
class Monitor:
    """One monitor's rectangle on the virtual desktop; index is its 0-based place in list_monitors()."""

    index: int
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

    def contains(self, left: int, top: int, width: int = 1, height: int = 1) -> bool:
        """True when the desktop-absolute rectangle lies wholly on this monitor."""
        return self.left <= left and self.top <= top and left + width <= self.right and top + height <= self.bottom

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Monitor:
        if not isinstance(data, dict):
            raise ValueError("A saved monitor must be a table with index, left, top, width and height.")
        values = {}
        for name in ("index", "left", "top", "width", "height"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"A saved monitor needs a whole number for {name!r}, got {value!r}.")
            values[name] = value
        if values["width"] <= 0 or values["height"] <= 0:
            raise ValueError("A saved monitor must have a positive width and height.")
        return cls(**values)


def _open_mss() -> Any:
    """mss >= 10.2 names the class MSS; older releases only have the mss() factory."""
    factory = getattr(mss, "MSS", None) or mss.mss
    try:
        return factory()
    except Exception as error:  # mss raises ScreenShotError, or OSError/ctypes errors without a display
        raise CaptureError(f"Could not open the screen for capture ({error}); run dotocr inside a desktop "
                           "session.") from error


def _monitors_from(sct: Any) -> list[Monitor]:
    raw = sct.monitors
    # raw[0] spans all monitors; raw[1:] are the monitors themselves (absent on some headless setups).
    singles = raw[1:] or raw[:1]
    return [
        Monitor(index=i, left=m["left"], top=m["top"], width=m["width"], height=m["height"])
        for i, m in enumerate(singles)
    ]


def _to_image(shot: Any) -> Image.Image:
    """BGRA bytes from mss to an RGB PIL image, without a per-pixel Python loop."""
    return Image.frombuffer("RGB", shot.size, shot.raw, "raw", "BGRX", 0, 1)


def _grab(sct: Any, left: int, top: int, width: int, height: int) -> Image.Image:
    try:
        shot = sct.grab({"left": left, "top": top, "width": width, "height": height})
    except Exception as error:
        raise CaptureError(f"Could not read the screen at {width}x{height}+{left}+{top} ({error}).") from error
    return _to_image(shot)


def list_monitors() -> list[Monitor]:
    with _open_mss() as sct:
        return _monitors_from(sct)


def grab_all() -> list[tuple[Monitor, Image.Image]]:
    """One screenshot per monitor, taken back to back so the overlay can freeze the whole desktop."""
    with _open_mss() as sct:
        return [(m, _grab(sct, m.left, m.top, m.width, m.height)) for m in _monitors_from(sct)]


def grab_rect(left: int, top: int, width: int, height: int) -> Image.Image:
    """A desktop-absolute rectangle (the "repeat last region" path); it must lie on one monitor."""
    if width <= 0 or height <= 0:
        raise CaptureError(f"A region must have a positive width and height, got {width}x{height}.")
    with _open_mss() as sct:
        monitors = _monitors_from(sct)
        if not any(m.contains(left, top, width, height) for m in monitors):
            raise CaptureError(
                f"The region {width}x{height}+{left}+{top} is not on any current monitor; select a new region."
            )
        return _grab(sct, left, top, width, height)


class _Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_long), ("y", ctypes.c_long)]


MONITOR_DEFAULTTONEAREST = 2


def windows_monitor_handle(monitor: Monitor) -> int | None:
    """Windows' HMONITOR for the monitor (found by its centre), for the calls that ask about one monitor (its
    work area, its DPI); None elsewhere or when Windows does not answer."""
    if sys.platform != "win32":
        return None
    try:
        user32 = ctypes.windll.user32  # type: ignore[attr-defined]
        user32.MonitorFromPoint.restype = ctypes.c_void_p
        user32.MonitorFromPoint.argtypes = [_Point, ctypes.c_uint32]
        centre = _Point(monitor.left + monitor.width // 2, monitor.top + monitor.height // 2)
        return user32.MonitorFromPoint(centre, MONITOR_DEFAULTTONEAREST) or None
    except (AttributeError, OSError):
        return None
