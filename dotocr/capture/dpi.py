"""Per-monitor DPI awareness on Windows, so screenshots, mouse positions and Tk windows all speak
physical pixels. Windows fixes the awareness of a process the first time it is set, and scales any
window created before that, so this must run at start-up before Tk or mss create anything."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

# DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2 is the pseudo-handle -4.
PER_MONITOR_AWARE_V2 = -4
# PROCESS_PER_MONITOR_DPI_AWARE for shcore.SetProcessDpiAwareness (Windows 8.1+).
PROCESS_PER_MONITOR_DPI_AWARE = 2
# HRESULT E_ACCESSDENIED: awareness was already set (by a manifest or an earlier call).
E_ACCESSDENIED = -2147024891  # 0x80070005 as a signed 32-bit value

_result: str | None = None


def enable_dpi_awareness(windll: Any = None) -> str:
    """Make the process per-monitor DPI aware; call once, early. Safe to call again (no-op).

    Returns what took effect: "per-monitor-v2", "per-monitor", "already-set", "system",
    "unavailable" (every call failed), or "not-windows". `windll` replaces `ctypes.windll`
    in tests, the only place the Win32 boundary is faked.
    """
    global _result
    if _result is not None:
        return _result
    if windll is None:
        if sys.platform != "win32":
            _result = "not-windows"
            return _result
        windll = ctypes.windll  # type: ignore[attr-defined]
    _result = _set_awareness(windll)
    return _result


def _set_awareness(windll: Any) -> str:
    """Try the newest API first; older Windows versions lack the newer functions entirely."""
    try:
        if windll.user32.SetProcessDpiAwarenessContext(ctypes.c_void_p(PER_MONITOR_AWARE_V2)):
            return "per-monitor-v2"
    except (AttributeError, OSError):
        pass  # before Windows 10 1703
    try:
        hresult = windll.shcore.SetProcessDpiAwareness(PROCESS_PER_MONITOR_DPI_AWARE)
        if hresult == 0:
            return "per-monitor"
        if hresult == E_ACCESSDENIED:
            return "already-set"
    except (AttributeError, OSError):
        pass  # before Windows 8.1: no shcore.dll
    try:
        if windll.user32.SetProcessDPIAware():
            return "system"
    except (AttributeError, OSError):
        pass
    return "unavailable"


BASE_DPI = 96.0
"""What 100 % scaling means on Windows and X11 alike."""


def monitor_dpi(monitor: Any) -> float | None:
    """The DPI a person chose for this monitor (Windows: its effective DPI; X11: the desktop's Xft.dpi), or None
    when the system does not say, so the caller falls back on what Tk measured."""
    if sys.platform == "win32":
        return _windows_monitor_dpi(monitor)
    if sys.platform.startswith("linux"):
        return _xft_dpi()
    return None


def _windows_monitor_dpi(monitor: Any) -> float | None:
    from dotocr.capture.screens import windows_monitor_handle

    handle = windows_monitor_handle(monitor)
    if handle is None:
        return None
    try:
        shcore = ctypes.windll.shcore  # type: ignore[attr-defined]
        x, y = ctypes.c_uint(), ctypes.c_uint()
        if shcore.GetDpiForMonitor(ctypes.c_void_p(handle), 0, ctypes.byref(x), ctypes.byref(y)) == 0:
            return float(x.value) or None
    except (AttributeError, OSError):  # before Windows 8.1: no shcore
        pass
    return None


_xft: list[float | None] = []


def _xft_dpi() -> float | None:
    """Xft.dpi from the X resources (what GNOME, KDE and Xfce set for their scaling); read once per process."""
    if not _xft:
        _xft.append(_read_xft_dpi())
    return _xft[0]


def _read_xft_dpi() -> float | None:
    try:
        from Xlib import X, Xatom, display
    except ImportError:
        return None
    try:
        connection = display.Display()
    except Exception:  # no X server (Wayland without Xwayland): nothing to read
        return None
    try:
        prop = connection.screen().root.get_full_property(Xatom.RESOURCE_MANAGER, X.AnyPropertyType)
        text = prop.value.decode("utf-8", "replace") if prop is not None and isinstance(prop.value, bytes) else ""
    except Exception:
        return None
    finally:
        connection.close()
    return parse_xft_dpi(text)


def parse_xft_dpi(resources: str) -> float | None:
    """The value of `Xft.dpi` in an X resource string, or None when it is missing or not a sensible number."""
    for line in resources.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Xft.dpi":
            try:
                dpi = float(value.strip())
            except ValueError:
                return None
            return dpi if 24 <= dpi <= 960 else None
    return None
