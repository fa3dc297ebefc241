"""The local HTTP API: `create_app` for any ASGI server, `start_background_server` for the tray."""

from .app import create_app, main
from .limits import ServerLimits
from .serving import BackgroundServer, ServerStartError, start_background_server

__all__ = ["BackgroundServer", "ServerLimits", "ServerStartError", "create_app", "main",
           "start_background_server"]
