"""Start at login on Windows: the per-user Run key, honouring Task Manager's "Disabled" switch.

Task Manager does not touch the Run value when a person disables a startup app; it writes a binary
value under Explorer\\StartupApproved\\Run whose first byte is odd-numbered-disabled (0x03/0x07)
or enabled (0x02/0x06). is_enabled() lets that switch win. enable() removes it, because ticking
"Start at login" in our menu is the person's newer, explicit choice.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from .base import APP_ID, AutostartError

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
_DISABLED_FLAGS = {0x03, 0x07}


def run_command_line(argv: list[str]) -> str:
    """The Run value: the program path always in double quotes (Windows reads an unquoted path with spaces
    as several candidate programs, and quoting it always is what installers do), the rest quoted as the C
    runtime parses it."""
    program, *rest = argv
    if '"' in program:
        raise AutostartError(f"The program path {program!r} contains a double quote, which a Windows path "
                             "cannot hold.")
    return " ".join([f'"{program}"', *([subprocess.list2cmdline(rest)] if rest else [])])


class WindowsAutostart:
    """`winreg` is injectable so the tests can fake the registry (the real one exists only on Windows)."""

    name = "windows (HKCU Run key)"

    def __init__(self, winreg: Any = None) -> None:
        if winreg is None:
            import winreg  # type: ignore[no-redef]  # Windows only
        self._reg = winreg

    @staticmethod
    def is_compatible() -> bool:
        return sys.platform == "win32"

    def command(self) -> str | None:
        """The registered command line, or None."""
        return self._read(RUN_KEY)

    def is_enabled(self) -> bool:
        if not self.command():
            return False
        approved = self._read(APPROVED_KEY)
        return not (isinstance(approved, bytes | bytearray) and approved[:1]
                    and approved[0] in _DISABLED_FLAGS)

    def enable(self, argv: list[str]) -> None:
        if not argv:
            raise AutostartError("Start at login needs a command to run; none was given.")
        reg = self._reg
        try:
            with reg.CreateKeyEx(reg.HKEY_CURRENT_USER, RUN_KEY, 0, reg.KEY_SET_VALUE) as key:
                reg.SetValueEx(key, APP_ID, 0, reg.REG_SZ, run_command_line(argv))
        except OSError as exc:
            raise AutostartError(
                f"Could not write the Run key in the registry ({exc.strerror or exc}).") from None
        self._delete(APPROVED_KEY)

    def disable(self) -> None:
        self._delete(RUN_KEY)
        self._delete(APPROVED_KEY)

    def _read(self, path: str) -> Any:
        reg = self._reg
        try:
            with reg.OpenKey(reg.HKEY_CURRENT_USER, path, 0, reg.KEY_READ) as key:
                value, _kind = reg.QueryValueEx(key, APP_ID)
        except OSError:  # FileNotFoundError: no key or no value
            return None
        return value

    def _delete(self, path: str) -> None:
        reg = self._reg
        try:
            with reg.OpenKey(reg.HKEY_CURRENT_USER, path, 0, reg.KEY_SET_VALUE) as key:
                reg.DeleteValue(key, APP_ID)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise AutostartError(
                f"Could not change the registry key {path} ({exc.strerror or exc}).") from None
