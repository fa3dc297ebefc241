"""The global hotkey as registered for this tray: the backend, and why the configured combination does not
work when it does not (shown as a menu line, in the tooltip, once as a toast, and in the log)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class HotkeyBinding:
    def __init__(self, backend: Any | None, *, unavailable: str, notify: Callable[[str, str], None]) -> None:
        self._backend = backend
        self._unavailable = unavailable
        self._notify = notify
        self.error: str | None = None

    @property
    def backend(self) -> Any | None:
        return self._backend

    def register(self, combo: str, on_press: Callable[[], None]) -> bool:
        """A taken or malformed combination becomes `error` and a toast, never an exception."""
        if self._backend is None:
            self.error = self._unavailable or (
                f"The hotkey {combo} cannot work on this desktop; capture from the tray menu instead.")
            self._notify("No global hotkey", self.error)
            return False
        from dotocr.desktop.hotkey import HotkeyError, parse_hotkey

        try:
            self._backend.register(parse_hotkey(combo), on_press)
        except (HotkeyError, ValueError) as exc:
            self.error = str(exc)
            log.warning("Hotkey not available: %s", exc)  # the toast fades; the tray's log keeps why
            self._notify("Hotkey not available", str(exc))
            return False
        self.error = None
        return True

    def should_retry(self, old_combo: str, new_combo: str) -> bool:
        """After a settings reload: a new combination, or one taken earlier that may be free now."""
        return new_combo != old_combo or (self.error is not None and self._backend is not None)

    def unregister(self) -> None:
        if self._backend is not None:
            try:
                self._backend.unregister()
            except Exception:
                log.exception("Unregistering the hotkey failed")
