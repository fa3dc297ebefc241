"""The one settings object every front end shares, its TOML file, and its command-line flags.

Settings flow one way: file -> command-line overrides -> engine. A broken file is reported with
its name and line, the app runs on defaults, and the file is never overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

import tomli_w
from platformdirs import user_config_path, user_data_path

APP_NAME = "dotocr"
DEFAULT_MODEL = "rednote-hilab/dots.ocr"

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "4bit", "fp16", "bf16", "fp32")
PROMPT_MODES = ("text", "layout", "layout-json", "grounding")
OUTPUT_FORMATS = ("text", "markdown", "json")
ENGINES = ("local", "remote")


@dataclass(frozen=True)
class Settings:
    """Everything a user can choose. Frozen: a change is a new object, handed to the engine whole."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: str = "auto"
    max_image_size: int = 1024
    max_new_tokens: int = 4096
    prompt: str = "text"
    output_format: str = "text"
    # tray
    hotkey: str = "ctrl+alt+shift+o"
    history_size: int = 20
    idle_minutes: int = 0
    api_enabled: bool = False
    api_port: int = 8765
    # where inference runs
    engine: str = "local"
    remote_url: str = "http://127.0.0.1:8000/v1"
    remote_api_key: str = ""
    remote_model: str = "model"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("device", DEVICES),
            ("precision", PRECISIONS),
            ("prompt", PROMPT_MODES),
            ("output_format", OUTPUT_FORMATS),
            ("engine", ENGINES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise SettingsError(f"{name} = {value!r} is not one of {', '.join(allowed)}.")
        for name, low in (("max_image_size", 28), ("max_new_tokens", 1), ("history_size", 0),
                          ("idle_minutes", 0), ("api_port", 1)):
            value = getattr(self, name)
            if name == "max_image_size" and value == 0 and not isinstance(value, bool):
                continue  # 0: no cap beyond dots.ocr's own sizing
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingsError(f"{name} = {value!r} must be a whole number of at least {low}"
                                    + (" (or 0 for no cap)." if name == "max_image_size" else "."))
        if self.api_port > 65535:
            raise SettingsError(f"api_port = {self.api_port} is not a port; use a number from 1 to 65535.")
        if not isinstance(self.model, str) or not self.model.strip():
            raise SettingsError("model must name a Hugging Face repo id or a local folder.")

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied; None values are ignored so parsed flags can pass straight in."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_dict_subset(self, keys: Any) -> dict[str, Any]:
        """These settings' values for `keys` only (validated, since the object exists)."""
        return {key: getattr(self, key) for key in keys}


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message says which and what is allowed."""


def settings_path() -> Path:
    override = os.environ.get("DOTOCR_CONFIG")
    if override:
        return Path(override)
    return user_config_path(APP_NAME, appauthor=False) / "settings.toml"


def data_dir() -> Path:
    override = os.environ.get("DOTOCR_DATA_DIR")
    if override:
        return Path(override)
    return user_data_path(APP_NAME, appauthor=False)


@dataclass
class SettingsFile:
    """The TOML file behind the settings. Remembers whether it was broken so it is never overwritten."""

    path: Path = field(default_factory=settings_path)
    problems: list[str] = field(default_factory=list)
    broken: bool = False

    def load(self) -> Settings:
        """Read the file; problems go to `self.problems` as one sentence each, never an exception."""
        self.problems = []
        self.broken = False
        if not self.path.exists():
            return Settings()
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            self.broken = True
            line = getattr(exc, "lineno", None)
            where = f"{self.path}, line {line}" if line else str(self.path)
            reason = getattr(exc, "msg", str(exc))
            self.problems.append(
                f"The settings file {where} could not be read ({reason}); using defaults and leaving "
                "the file untouched until you fix it."
            )
            return Settings()
        except OSError as exc:
            self.broken = True
            self.problems.append(f"The settings file {self.path} could not be opened ({exc.strerror}).")
            return Settings()
        return self._from_mapping(data)

    def _from_mapping(self, data: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(Settings)}
        settings = Settings()
        for key, value in data.items():
            if key not in known:
                self.problems.append(f"Unknown setting {key!r} in {self.path} is ignored.")
                continue
            try:
                settings = settings.replace(**{key: value})
            except (SettingsError, TypeError) as exc:
                self.problems.append(f"In {self.path}: {exc} Using the default {getattr(Settings(), key)!r}.")
        return settings

    def save(self, settings: Settings) -> bool:
        """Write every setting (to create the file). False, writing nothing, if the file was broken."""
        if self.broken:
            return False
        return self._write(settings.to_dict())

    def update(self, changes: dict[str, Any]) -> bool:
        """Change these keys in the file as it is now, keeping everything else the person wrote there
        (unknown keys, values we could not use, edits made since we read it). False, writing nothing, when
        the file cannot be read or parsed now, or cannot be written."""
        current: dict[str, Any] = {}
        if self.path.exists():
            try:
                current = tomllib.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                self.broken = True
                return False
        return self._write({**current, **Settings().replace(**changes).to_dict_subset(changes)})

    def _write(self, data: dict[str, Any]) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".toml.tmp")
            tmp.write_text(tomli_w.dumps(data), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            self.problems.append(f"The settings file {self.path} could not be written ({exc.strerror}).")
            return False
        return True


# -- command-line flags shared by `dotocr`, `dotocr-tray` and `dotocr-serve` -------------------------

def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine's flags; each defaults to None so an unset flag leaves the settings file's value."""
    group = parser.add_argument_group("engine")
    group.add_argument("--model", help="Hugging Face repo id or local checkpoint folder "
                       f"(default {DEFAULT_MODEL})")
    group.add_argument("--device", choices=DEVICES)
    group.add_argument("--precision", choices=PRECISIONS)
    group.add_argument("--max-image-size", type=_image_cap, metavar="PX",
                       help="cap on the longest image side in pixels, 0 for none (default 1024)")
    group.add_argument("--max-new-tokens", type=_whole_number(1), metavar="N")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags for this run; a flag left out is None and overrides nothing."""
    names = {f.name for f in fields(Settings)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def settings_from_args(args: argparse.Namespace, base: Settings) -> Settings:
    """Apply whichever setting flags were given on top of `base`."""
    return base.replace(**overrides_from_args(args))


def _whole_number(low: int, high: int | None = None):
    """An argparse type for whole numbers in [low, high] with a message that says the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} must be at least {low}" if high is None else f"{value} must be from {low} to {high}")
        return value

    return parse


port_number = _whole_number(1, 65535)


def _image_cap(text: str) -> int:
    """--max-image-size: 0 (no cap) or at least 28 pixels."""
    value = _whole_number(0)(text)
    if 0 < value < 28:
        raise argparse.ArgumentTypeError(f"{value} must be 0 (no cap) or at least 28")
    return value
