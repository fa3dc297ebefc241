"""Whether a toast can be seen on this desktop: the result window's "auto" mode opens when it cannot.

The tray's notifier is the first backend that works (desktop/notification): the icon's own (Windows), notify-send
(Linux), or the log. The log shows nothing on screen; notify-send shows nothing without a notification daemon on
the session bus (it waits, then fails). The bus is asked once, with a short timeout, and never started: with no
session bus there is nobody to show a toast.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOTIFICATIONS = "org.freedesktop.Notifications"
TIMEOUT_S = 1.0


def toasts_visible(notifier: Any) -> bool:
    """False when the notifier cannot put anything on screen; True when it can or when we cannot tell."""
    name = getattr(notifier, "name", "")
    if name == "log":
        return False
    if name == "notify-send":
        return notification_daemon() is not False
    return True


def notification_daemon(environ: dict[str, str] | None = None) -> bool | None:
    """Whether the session bus has (or can start) a notification daemon; None when no tool here can ask it."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("DBUS_SESSION_BUS_ADDRESS"):
        runtime = env.get("XDG_RUNTIME_DIR")
        if not runtime or not Path(runtime, "bus").exists():
            return False  # no session bus, and asking would autolaunch one: nothing can show a toast
    owned = _ask_bus("NameHasOwner", env)
    if owned is None:
        return None
    if "true" in owned.lower():
        return True
    activatable = _ask_bus("ListActivatableNames", env)  # a daemon the bus starts on the first toast
    return None if activatable is None else NOTIFICATIONS in activatable


def _ask_bus(method: str, env: dict[str, str]) -> str | None:
    """The bus daemon's answer to `method` as text, or None when neither dbus-send nor gdbus is installed or it
    does not answer in time."""
    argument = [f"string:{NOTIFICATIONS}"] if method == "NameHasOwner" else []
    if shutil.which("dbus-send"):
        argv = ["dbus-send", "--session", "--print-reply", f"--reply-timeout={int(TIMEOUT_S * 1000)}",
                "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus", f"org.freedesktop.DBus.{method}", *argument]
    elif shutil.which("gdbus"):
        argv = ["gdbus", "call", "--session", "--timeout", str(int(TIMEOUT_S)), "--dest", "org.freedesktop.DBus",
                "--object-path", "/org/freedesktop/DBus", "--method", f"org.freedesktop.DBus.{method}",
                *([NOTIFICATIONS] if argument else [])]
    else:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S + 1, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


class ToastCheck:
    """`toasts_visible(notifier)`, asked once on a worker thread at start (the bus answers in milliseconds, but
    the Tk thread never waits on a subprocess); until it answers, toasts count as visible."""

    def __init__(self, notifier: Any) -> None:
        self._notifier = notifier
        self._visible = getattr(notifier, "name", "") != "log"

    def start(self) -> None:
        threading.Thread(target=self._check, name="dotocr-toast-check", daemon=True).start()

    def _check(self) -> None:
        try:
            self._visible = toasts_visible(self._notifier)
        except Exception:
            log.exception("Checking whether notifications can be seen failed")

    def __call__(self) -> bool:
        return self._visible
