"""The tray's settings: the one owner of the settings file, this run's command-line flags and menu saves.

Three layers: what the file holds, this run's command-line values on top of it (`overrides`), and the
result that applies now (`current`). A menu choice changes the file and this run, and is newer than the
command-line value it replaces; command-line values never reach the file. A broken file is never
overwritten, and "Reload settings" keeps the current settings when the file cannot be parsed now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from dotocr.config import Settings, SettingsFile

log = logging.getLogger(__name__)


class TraySettings:
    def __init__(self, settings: Settings, *, notify: Callable[[str, str], None],
                 settings_file: SettingsFile | None = None, file_settings: Settings | None = None,
                 overrides: Mapping[str, Any] | None = None, launch_flags: list[str] | None = None) -> None:
        self._notify = notify
        self.current = settings
        self.file_settings = file_settings if file_settings is not None else settings
        """What the settings file holds; menu changes go here too, command-line values never do."""
        self.overrides: dict[str, Any] = dict(overrides) if overrides is not None else _differences(
            self.file_settings, settings)
        """This run's command-line values, applied again on top of the file by "Reload settings"."""
        self.file = settings_file
        self.launch_flags = list(launch_flags or [])
        """This run's command line, repeated by "Start at login"."""
        self._save_warned = False

    def change(self, **changes: Any) -> bool:
        """A menu change: applies to this run and is saved; False (with one toast per run) if it could not be."""
        self.current = self.current.replace(**changes)
        self.file_settings = self.file_settings.replace(**changes)
        for key in changes:  # a menu choice is newer than the command line it replaces
            self.overrides.pop(key, None)
        if self.file is None:
            return True
        saved = self.file.update(changes)
        if not saved and not self._save_warned:
            self._save_warned = True
            self._notify("Settings not saved", f"The settings file {self.file.path} could not be read or "
                         "written, so menu changes last until you quit; fix the file to keep them.")
        return saved

    def reload(self) -> Settings:
        """Read the file again with this run's command-line values on top; returns the settings that apply now
        (the old ones when the file cannot be parsed, after one toast saying why)."""
        settings_file = self.file
        if settings_file is None:
            return self.current
        file_settings = settings_file.load()
        self.report_problems(settings_file.problems)
        if not settings_file.broken:
            self.file_settings = file_settings
            self.current = file_settings.replace(**self.overrides)
            self._save_warned = False
        return self.current

    def report_problems(self, problems: list[str]) -> None:
        """Log each problem; one toast, so a broken file is noticed but not nagged about."""
        for problem in problems:
            log.warning("%s", problem)
        if problems:
            more = f" (and {len(problems) - 1} more, see the log)" if len(problems) > 1 else ""
            self._notify("Settings problem", problems[0] + more)

    def ensure_file(self) -> bool:
        """For "Open settings file": create the file from the file settings if it is missing."""
        if self.file is None:
            return False
        return self.file.path.exists() or self.file.save(self.file_settings)


def _differences(base: Settings, settings: Settings) -> dict[str, Any]:
    """The values `settings` has on top of `base`: the overrides, when the caller did not name them."""
    return {key: value for key, value in settings.to_dict().items() if getattr(base, key) != value}
