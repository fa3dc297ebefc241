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
