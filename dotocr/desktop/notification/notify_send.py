"""Desktop notifications on Linux through the `notify-send` command (libnotify)."""

from __future__ import annotations

import html
import logging
import shutil
import subprocess
import sys
import threading
from typing import Any

from .text import fit_notification

log = logging.getLogger(__name__)

TITLE_MAX = 120
TEXT_MAX = 1000
EXPIRE_MS = 6000


def notify_send_command(title: str, message: str, executable: str = "notify-send") -> list[str]:
    """The argv for one notification; the body is escaped because servers read it as simple markup."""
    title, message = fit_notification(title, message, title_max=TITLE_MAX, text_max=TEXT_MAX)
    return [executable, "--app-name=dotocr", f"--expire-time={EXPIRE_MS}", "--",
            title, html.escape(message, quote=False)]


class NotifySendNotifier:
    name = "notify-send"

    def __init__(self, icon: Any = None) -> None:
        self._executable = shutil.which("notify-send") or "notify-send"

    @staticmethod
    def is_compatible(icon: Any = None) -> bool:
        return sys.platform.startswith("linux") and shutil.which("notify-send") is not None

    def notify(self, title: str, message: str) -> None:
        """Start notify-send and return at once; a thread reaps it (it stalls with no notification daemon)."""
        argv = notify_send_command(title, message, self._executable)
        try:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
        except OSError as exc:
            log.warning("notify-send could not start (%s); %s: %s", exc, title, message)
            return
        threading.Thread(target=_reap, args=(process, title, message), daemon=True,
                         name="dotocr-notify").start()


def _reap(process: subprocess.Popen[bytes], title: str, message: str) -> None:
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        log.warning("notify-send did not finish; is a notification daemon running? %s: %s", title, message)
        return
    if process.returncode != 0:
        log.warning("notify-send failed (%s); %s: %s", err.decode(errors="replace").strip(), title, message)
