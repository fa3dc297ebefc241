"""The protocol every start-at-login backend follows, its error, and the command it registers."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

from dotocr.errors import DotOCRError

APP_ID = "dotocr"


class AutostartError(DotOCRError):
    """Start at login could not be changed; the message says why."""


@runtime_checkable
class Autostart(Protocol):
    name: str

    @staticmethod
    def is_compatible() -> bool: ...

    def is_enabled(self) -> bool: ...

    def enable(self, argv: list[str]) -> None: ...

    def disable(self) -> None: ...


def default_tray_command(flags: list[str]) -> list[str]:
    """The command that starts this tray now, with `flags`, for registering at login.

    Windows: a frozen build is its own exe; otherwise pythonw.exe beside python.exe runs the module, so
    no console window opens (the dotocr-tray.exe console launcher would open one). Elsewhere: the
    dotocr-tray script of this same environment if it is installed, else this interpreter with -m.
    """
    exe = Path(sys.executable)
    if getattr(sys, "frozen", False):
        return [str(exe), *flags]
    if sys.platform == "win32":
        pythonw = exe.with_name("pythonw.exe")
        interpreter = pythonw if pythonw.exists() else exe
        return [str(interpreter), "-m", "dotocr.tray", *flags]
    script = exe.parent / "dotocr-tray"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *flags]
    return [str(exe), "-m", "dotocr.tray", *flags]
