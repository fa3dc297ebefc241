"""A selected screen region, kept both monitor-local (what the overlay drew) and desktop-absolute
(what a later "repeat last region" grabs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dotocr.capture.screens import Monitor, grab_rect

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Region:
    """x, y, width, height are physical pixels relative to the monitor's top-left corner."""

    monitor: Monitor
    x: int
    y: int
    width: int
    height: int

    @property
    def left(self) -> int:
        return self.monitor.left + self.x

    @property
    def top(self) -> int:
        return self.monitor.top + self.y

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The monitor-local PIL crop box (left, upper, right, lower)."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    def grab(self) -> Image.Image:
        """The region's desktop rectangle as it is now ("Repeat last region")."""
        return grab_rect(self.left, self.top, self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor.to_dict(),
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Region:
        """Rebuild a saved region; a damaged record raises ValueError with one clear sentence."""
        if not isinstance(data, dict):
            raise ValueError("The saved region must be a table with monitor, x, y, width and height.")
        monitor = Monitor.from_dict(data.get("monitor"))
        values = {}
        for name in ("x", "y", "width", "height"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"The saved region needs a whole number for {name!r}, got {value!r}.")
            values[name] = value
        if values["width"] <= 0 or values["height"] <= 0:
            raise ValueError("The saved region must have a positive width and height.")
        if values["x"] < 0 or values["y"] < 0:
            raise ValueError("The saved region must start inside its monitor (x and y of 0 or more).")
        if values["x"] + values["width"] > monitor.width or values["y"] + values["height"] > monitor.height:
            raise ValueError("The saved region extends past the edge of its monitor; select a new region.")
        return cls(monitor=monitor, **values)
