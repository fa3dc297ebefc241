"""Where we know no start-at-login mechanism (macOS for now): report it off, refuse to turn it on."""

from __future__ import annotations

from .base import AutostartError


class UnsupportedAutostart:
    name = "unsupported"

    @staticmethod
    def is_compatible() -> bool:
        return True

    def is_enabled(self) -> bool:
        return False

    def enable(self, argv: list[str]) -> None:
        raise AutostartError("Start at login is not supported on this system yet; add dotocr-tray to your "
                             "login items by hand.")

    def disable(self) -> None:
        return None
