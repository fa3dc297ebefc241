"""The last resort: the message goes to the log, so nothing is lost where no desktop notifier exists."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("dotocr.notification")


class LoggingNotifier:
    name = "log"

    def __init__(self, icon: Any = None) -> None:
        pass

    @staticmethod
    def is_compatible(icon: Any = None) -> bool:
        return True

    def notify(self, title: str, message: str) -> None:
        log.info("%s: %s", title, message)
