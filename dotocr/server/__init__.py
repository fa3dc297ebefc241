"""The local HTTP API: `create_app` for any ASGI server, `start_background_server` for the tray.

Names are imported on first use, so `dotocr-serve --help` (the `main` module) costs no web framework.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "create_app": ".app",
    "main": ".main",
    "ServerLimits": ".limits",
    "BackgroundServer": ".serving",
    "ServerStartError": ".serving",
    "start_background_server": ".serving",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_NAMES)
