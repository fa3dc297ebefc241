"""Start at login on Linux desktops: an XDG autostart entry, ~/.config/autostart/dotocr.desktop."""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

from dotocr.storage import NORMAL_FILE, write_atomic

from .base import APP_ID, AutostartError

# Characters that force an Exec argument into double quotes (Desktop Entry spec, "The Exec key").
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def autostart_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    # The spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "autostart"


def _quote_argument(arg: str) -> str:
    if "\n" in arg or "\r" in arg:
        raise AutostartError("An argument of the start-at-login command contains a line break, "
                             "which a desktop entry cannot hold.")
    if arg and not (_RESERVED & set(arg)):
        quoted = arg
    else:
        inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
        quoted = f'"{inner}"'
    # Then the general string escaping of the file format (backslash doubles) and %-escaping of field codes.
    return quoted.replace("\\", "\\\\").replace("%", "%%")


def exec_line(argv: list[str]) -> str:
    """The value of Exec= for `argv`, quoted per the Desktop Entry specification."""
    return " ".join(_quote_argument(a) for a in argv)


class XdgAutostart:
    name = "xdg (autostart .desktop)"

    def __init__(self) -> None:
        self.path = autostart_dir() / f"{APP_ID}.desktop"

    @staticmethod
    def is_compatible() -> bool:
        return sys.platform not in ("win32", "darwin")

    def is_enabled(self) -> bool:
        entry = self._read()
        if entry is None or not entry.get("Exec", "").strip():
            return False
        if entry.get("Hidden", "false").strip().lower() == "true":
            return False
        return entry.get("X-GNOME-Autostart-enabled", "true").strip().lower() != "false"

    def enable(self, argv: list[str]) -> None:
        if not argv:
            raise AutostartError("Start at login needs a command to run; none was given.")
        content = "\n".join([
            "[Desktop Entry]",
            "Type=Application",
            "Name=dotocr",
            "Comment=Screen OCR: press the hotkey, drag over text, paste",
            f"Exec={exec_line(argv)}",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "",
        ])
        try:
            write_atomic(self.path, content, mode=NORMAL_FILE)  # holds no secret
        except OSError as exc:
            raise AutostartError(f"Could not write {self.path} ({exc.strerror or exc}).") from None

    def disable(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise AutostartError(f"Could not remove {self.path} ({exc.strerror or exc}).") from None

    def _read(self) -> dict[str, str] | None:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        try:
            parser.read_string(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, configparser.Error):
            return None
        if not parser.has_section("Desktop Entry"):
            return None
        return dict(parser["Desktop Entry"])
