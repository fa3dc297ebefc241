"""Notifications after a capture: the tray icon's own where it has them, notify-send, else the log."""

from __future__ import annotations

from typing import Any

from .base import Notifier
from .logging_backend import LoggingNotifier
from .notify_send import NotifySendNotifier
from .pystray_backend import PystrayNotifier
from .text import WINDOWS_TEXT_MAX, WINDOWS_TITLE_MAX, fit_notification

BACKENDS: tuple[type, ...] = (PystrayNotifier, NotifySendNotifier, LoggingNotifier)

__all__ = ["BACKENDS", "WINDOWS_TEXT_MAX", "WINDOWS_TITLE_MAX", "Notifier", "fit_notification", "get_notifier"]


def get_notifier(icon: Any = None) -> Notifier:
    """The first backend that works here; pass the pystray icon so its native notifications can be used."""
    for backend in BACKENDS:
        if backend.is_compatible(icon):
            return backend(icon)
    return LoggingNotifier()
