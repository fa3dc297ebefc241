"""Start the tray at login: the Windows Run key, or an XDG autostart entry on Linux desktops."""

from __future__ import annotations

from .base import Autostart, AutostartError, default_tray_command
from .unsupported import UnsupportedAutostart
from .windows import WindowsAutostart
from .xdg import XdgAutostart

BACKENDS: tuple[type, ...] = (WindowsAutostart, XdgAutostart, UnsupportedAutostart)

__all__ = ["BACKENDS", "Autostart", "AutostartError", "default_tray_command", "get_autostart"]


def get_autostart() -> Autostart:
    for backend in BACKENDS:
        if backend.is_compatible():
            return backend()
    return UnsupportedAutostart()
