"""Notifications through the tray icon itself (the Windows balloon/toast), where pystray supports it."""

from __future__ import annotations

import logging
from typing import Any

from .text import WINDOWS_TEXT_MAX, WINDOWS_TITLE_MAX, fit_notification

log = logging.getLogger(__name__)


class PystrayNotifier:
    """`icon.notify(message, title)`, texts cut to the Windows balloon buffers, which reject longer ones."""

    name = "pystray"

    def __init__(self, icon: Any) -> None:
        self._icon = icon

    @staticmethod
    def is_compatible(icon: Any = None) -> bool:
        return icon is not None and bool(getattr(icon, "HAS_NOTIFICATION", False))

    def notify(self, title: str, message: str) -> None:
        title, message = fit_notification(title, message, title_max=WINDOWS_TITLE_MAX,
                                          text_max=WINDOWS_TEXT_MAX)
        try:
            self._icon.notify(message, title)
        except Exception:
            log.exception("The tray notification failed: %s: %s", title, message)
