"""The one settings object every front end shares, its TOML file, its environment variables and its flags.

Settings flow one way: defaults -> the file -> `DOTOCR_<KEY>` environment variables -> command-line flags ->
engine. Each setting is declared once (default, allowed values or range, help, flag) as field metadata of
`Settings`; validation, the environment variables and the flags all read it. A broken file is reported with
its name (and line), the app runs on defaults, and the file is never overwritten; a bad environment value is
reported and ignored, like a bad value in the file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

import tomli_w
from platformdirs import user_config_path, user_data_path

from dotocr.storage import PRIVATE_FILE, FileTooLargeError, locked, read_limited, write_atomic
from dotocr.vision_grid import IMAGE_FACTOR

APP_NAME = "dotocr"
DEFAULT_MODEL = "rednote-hilab/dots.ocr"

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "4bit", "fp16", "bf16", "fp32")
DECODERS = ("auto", "torch", "llamacpp")
VISION_PRECISIONS = ("auto", "int8")
"""auto: the vision tower in the precision's dtype; int8: its Linear layers in dynamic int8 (CPU only)."""
SPECULATE = ("auto", "on", "off")
"""Speculative decoding: auto drafts where it pays (the tokens never change), off never drafts."""
GGUF_TYPES = ("f32", "f16", "q8_0", "q4_k_m")
"""What the GGUF writer makes: F32 (exact against the torch decoder), F16, and llama.cpp's Q8_0 and Q4_K_M."""
PROMPT_MODES = ("text", "layout", "layout-json", "grounding", "web", "scene-text", "svg", "general")
MOCR_PROMPTS = ("web", "scene-text", "svg", "general")
"""dots.mocr's own prompts (web page, scene text, image to SVG, a general question): offered where the checkpoint is
dots.mocr; dots.ocr was not trained on them."""
TABLE_TEXTS = ("auto", "tsv", "markdown")
"""How a table reads in the clipboard's plain text: TSV (cells paste into a spreadsheet), Markdown, or auto (Markdown
when the answer is Markdown, else TSV)."""
OUTPUT_FORMATS = ("text", "markdown", "json")
ENGINES = ("local", "remote")
RESULT_WINDOW_MODES = ("auto", "always", "never")
"""When the tray shows its result window; "auto" is defined in dotocr/tray/result_display.py (docs/tray.md)."""

ENV_PREFIX = "DOTOCR_"
"""`DOTOCR_<KEY>` sets a setting for this run, above the file and below the flags (DOTOCR_PRECISION=4bit)."""
MAX_SETTINGS_BYTES = 1_000_000
"""A settings file is a few hundred bytes; anything over this is not one and is not read."""


@dataclass(frozen=True)
class Option:
    """How one setting is declared, once: validation and its command-line flag both read this."""

    help: str
    choices: tuple[str, ...] = ()
    special: tuple[Any, ...] = ()  # values allowed besides the choices or range, e.g. "" = "pick for me"
    special_means: str = ""  # what the special values mean, for messages
    minimum: int | None = None
    maximum: int | None = None
    flag: str | None = None  # the command-line flag; None when the setting has none
    metavar: str | None = None
    default_text: str | None = None  # how --help names the default, when not the value itself


def setting(default: Any, help: str, **declaration: Any) -> Any:
    """A Settings field with its declaration attached (dataclass field metadata)."""
    return field(default=default, metadata={"option": Option(help=help, **declaration)})


@dataclass(frozen=True)
class Settings:
    """Everything a user can choose. Frozen: a change is a new object, handed to the engine whole.

    Each field declares its default, allowed values or range, help text and flag once, here."""

    model: str = setting(DEFAULT_MODEL, "Hugging Face repo id or local checkpoint folder", flag="--model",
                         metavar="ID_OR_FOLDER")
    device: str = setting("auto", "where the model runs", choices=DEVICES, flag="--device")
    precision: str = setting("auto", "weight precision: auto picks what fits the GPU", choices=PRECISIONS,
                             flag="--precision")
    decoder: str = setting("auto", "which code runs the text decoder: torch, llama.cpp (GGUF), or auto",
                           choices=DECODERS, flag="--decoder")
    gguf_type: str = setting("", "GGUF weight type for the llama.cpp decoder", choices=GGUF_TYPES,
                             special=("",), special_means="chosen by the precision", flag="--gguf-type",
                             default_text="chosen by the precision")
    vision_precision: str = setting("auto", "vision tower: auto follows --precision; int8 runs its Linear layers in "
                                    "int8 (CPU only; faster than fp32, not than bf16: not the default)",
                                    choices=VISION_PRECISIONS, flag="--vision-precision")
    speculate: str = setting("auto", "speculative decoding: auto checks guessed tokens in batches only where a "
                             "batch computes each token exactly as one at a time (fp32 torch, F32 GGUF on the CPU), "
                             "so no token can change; on everywhere (faster structured answers where batches are "
                             "cheap, a token may differ at a near-tie); off one token at a time",
                             choices=SPECULATE, flag="--speculate")
    max_image_size: int = setting(1024, "cap on the longest image side in pixels", minimum=IMAGE_FACTOR,
                                  maximum=8192, special=(0,), special_means="no cap beyond dots.ocr's own sizing",
                                  flag="--max-image-size", metavar="PX")
    max_new_tokens: int = setting(4096, "most tokens the model may write per image", minimum=1, maximum=131072,
                                  flag="--max-new-tokens", metavar="N")
    prompt: str = setting("text", "what to ask the model: plain text, layout as Markdown, layout cells as "
                          "JSON, or the text inside a box (grounding); dots.mocr also: a web page as Markdown, scene "
                          "text, an image as SVG, a general description", choices=PROMPT_MODES, flag="--prompt")
    output_format: str = setting("text", "text, markdown, or json: one object per image per line",
                                 choices=OUTPUT_FORMATS, flag="--format")
    barcodes: bool = setting(True, "read QR codes and bar codes first (zxing-cpp): their content comes before "
                             "the text, and a region that is only a code never loads the model")
    # tray
    table_text: str = setting("auto", "how a table reads in the clipboard's plain text: tsv (cells paste into a "
                              "spreadsheet), markdown, or auto (Markdown when the output is Markdown, else TSV); the "
                              "clipboard's HTML always holds the real table", choices=TABLE_TEXTS)
    hotkey: str = setting("ctrl+alt+shift+o", "global hotkey of the tray, e.g. ctrl+alt+shift+o",
                          flag="--hotkey", metavar="KEYS")
    history_size: int = setting(20, "how many results the tray's history keeps", minimum=0, maximum=1000)
    result_window: str = setting("auto", "the tray's result window, which shows the text as it is read and can stop "
                                 "it: always, never (a notification only), or auto (when no notification can be "
                                 "seen, or when a read takes more than a second)", choices=RESULT_WINDOW_MODES)
    idle_minutes: int = setting(0, "unload the model after this many idle minutes (0: never)", minimum=0,
                                maximum=10080)
    api_enabled: bool = setting(False, "the tray also serves the local HTTP API")
    api_port: int = setting(8765, "port of the local HTTP API", minimum=1, maximum=65535, metavar="PORT")
    # where inference runs
    engine: str = setting("local", "run the model here (local) or ask an OpenAI-compatible server (remote)",
                          choices=ENGINES)
    remote_url: str = setting("http://127.0.0.1:8000/v1", "base URL of the remote server: dotocr-serve, vLLM, "
                              "llama-server or Ollama; as a flag it also sets engine = \"remote\"",
                              flag="--server", metavar="URL")
    remote_api_key: str = setting("", "API key for the remote server (kept in this file, readable only by you)")
    remote_model: str = setting("model", "model name the remote server expects (the one it lists is taken when "
                                "it lists only one)", flag="--remote-model", metavar="NAME")

    def __post_init__(self) -> None:
        for name, declared in _declared().items():
            problem = _check(name, getattr(self, name), declared)
            if problem:
                raise SettingsError(problem)
        if not self.model.strip():
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


def declaration(name: str) -> Option:
    """The declaration of setting `name` (KeyError for a name that is not a setting)."""
    return _declared()[name]


def default_of(name: str) -> Any:
    return _fields()[name].default


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(Settings)}


def _declared() -> dict[str, Option]:
    return {f.name: f.metadata["option"] for f in fields(Settings)}


def _shown(value: Any) -> str:
    """A value as a message shows it: short, and safe for integers too long for repr()."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a number that long"
    text = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _check(name: str, value: Any, declared: Option) -> str | None:
    """The sentence saying why `value` is not allowed for `name`, or None when it is."""
    kind = type(default_of(name))
    if kind is bool:
        return None if isinstance(value, bool) else f"{name} = {_shown(value)} must be true or false."
    special = any(value == s and type(value) is type(s) for s in declared.special)
    besides = (f", or {' or '.join(_shown(s) for s in declared.special)} ({declared.special_means})"
               if declared.special else "")
    if kind is int:
        low, high = declared.minimum, declared.maximum
        ok = isinstance(value, int) and not isinstance(value, bool)
        if special or ok and (low is None or value >= low) and (high is None or value <= high):
            return None
        if high is None:
            return f"{name} = {_shown(value)} must be a whole number of at least {low}{besides}."
        return f"{name} = {_shown(value)} must be a whole number from {low} to {high}{besides}."
    if not isinstance(value, str):
        return f"{name} = {_shown(value)} must be text."
    if declared.choices and value not in declared.choices and not special:
        return f"{name} = {_shown(value)} is not one of {', '.join(declared.choices)}{besides}."
    return None


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
    """The TOML file behind the settings.

    A file that cannot be read (bad TOML, not UTF-8, nested too deeply, a number too long, too big) is
    reported in one sentence naming it, the app runs on defaults, and the file is left exactly as it is:
    `save` and `update` refuse to write while it is broken, so a person's edit is never overwritten.
    Writes are atomic and, for read-modify-write, locked against our other processes (dotocr.storage).
    """

    path: Path = field(default_factory=settings_path)
    problems: list[str] = field(default_factory=list)
    broken: bool = False

    def load(self) -> Settings:
        """Read the file; problems go to `self.problems` as one sentence each, never an exception."""
        self.problems = []
        self.broken = False
        try:
            data = self._read()
        except _Unreadable as exc:
            self.broken = True
            self.problems.append(str(exc))
            return Settings()
        if data is None:
            return Settings()
        if data.get("remote_api_key"):
            _close_up(self.path)
        return self._from_mapping(data)

    def _read(self) -> dict[str, Any] | None:
        """The file's table, None when there is no file; _Unreadable (with its sentence) otherwise."""
        try:
            raw = read_limited(self.path, MAX_SETTINGS_BYTES, writers_lock=True)
        except FileNotFoundError:
            return None
        except FileTooLargeError:
            raise _Unreadable(self._sentence(f"it is larger than {MAX_SETTINGS_BYTES // 1000} KB, so it cannot "
                                             "be a settings file")) from None
        except OSError as exc:
            raise _Unreadable(f"The settings file {self.path} could not be opened ({exc.strerror or exc}); "
                              "using defaults.") from None
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise _Unreadable(self._sentence("it is saved as UTF-16; save it as UTF-8"))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Unreadable(self._sentence(f"it is not UTF-8 text, byte {exc.start}; save it as UTF-8")) from None
        text = text.removeprefix("\ufeff")  # Notepad's UTF-8 signature
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", None)
            raise _Unreadable(self._sentence(str(getattr(exc, "msg", exc)), line)) from None
        except RecursionError:
            raise _Unreadable(self._sentence("it is nested too deeply")) from None
        except (ValueError, MemoryError):  # a number too long to convert, e.g. 5000 digits
            raise _Unreadable(self._sentence("a value in it is too large")) from None

    def _sentence(self, reason: str, line: int | None = None) -> str:
        where = f"{self.path}, line {line}" if line else str(self.path)
        return (f"The settings file {where} could not be read ({reason}); dotocr uses its defaults and leaves "
                "the file untouched until you fix or delete it.")

    def _from_mapping(self, data: dict[str, Any]) -> Settings:
        known = _declared()
        settings = Settings()
        for key, value in data.items():
            if key not in known:
                self.problems.append(f"Unknown setting {_shown(key)} in {self.path} is ignored.")
                continue
            problem = _check(key, value, known[key])
            if problem is None:
                try:
                    settings = settings.replace(**{key: value})
                except SettingsError as exc:
                    problem = str(exc)
            if problem is not None:
                self.problems.append(f"In {self.path}: {problem} Using the default {default_of(key)!r}.")
        return settings

    def save(self, settings: Settings) -> bool:
        """Write every setting (to create the file). False, writing nothing, if the file was broken."""
        if self.broken:
            return False
        return self._locked_write(lambda _current: settings.to_dict())

    def update(self, changes: dict[str, Any]) -> bool:
        """Change these keys in the file as it is now, keeping everything else the person wrote there
        (unknown keys, values we could not use, edits made since we read it). Locked, so another of our
        processes updating other keys at the same time keeps its keys too. False, writing nothing, when
        the file cannot be read or parsed now, or cannot be written. SettingsError for a bad value."""
        values = Settings().replace(**changes).to_dict_subset(changes)
        return self._locked_write(lambda current: {**current, **values})

    def _locked_write(self, make: Any) -> bool:
        try:
            with locked(self.path):
                try:
                    current = self._read() or {}
                except _Unreadable as exc:
                    self.broken = True
                    self.problems.append(str(exc))
                    return False
                write_atomic(self.path, tomli_w.dumps(make(current)), mode=PRIVATE_FILE)
        except OSError as exc:
            self.problems.append(f"The settings file {self.path} could not be written ({exc.strerror or exc}).")
            return False
        return True


def _close_up(path: Path) -> None:
    """A file holding an API key that an older version left readable by others becomes 0600 (POSIX; only a
    regular file of ours, never through a symlink)."""
    if not hasattr(os, "getuid"):
        return
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077:
            os.chmod(path, PRIVATE_FILE)
    except OSError:
        pass


class _Unreadable(Exception):
    """The settings file exists but cannot be used; the message is the sentence for the person."""


# -- command-line flags shared by `dotocr`, `dotocr-tray` and `dotocr-serve` -------------------------

ENGINE_FLAGS = ("model", "device", "precision", "decoder", "gguf_type", "vision_precision", "speculate",
                "max_image_size", "max_new_tokens", "remote_url", "remote_model")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine's flags; each defaults to None so an unset flag leaves the settings file's value."""
    group = parser.add_argument_group("engine")
    for name in ENGINE_FLAGS:
        add_setting_argument(group, name)


def add_setting_argument(parser: Any, name: str, *, help: str | None = None) -> argparse.Action:
    """The flag of setting `name`, built from its declaration (choices, range, help, default).
    Its default is None, so a flag left out overrides nothing."""
    declared = declaration(name)
    flag = declared.flag or "--" + name.replace("_", "-")
    default = declared.default_text or default_of(name)
    options: dict[str, Any] = {"dest": name, "default": None,
                               "help": f"{help or declared.help} (default {default})"}
    kind = type(default_of(name))
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif kind is int:
        options["type"] = argument_type(name)
        options["metavar"] = declared.metavar or "N"
    elif declared.choices:
        options["choices"] = declared.choices
    else:
        options["metavar"] = declared.metavar
    return parser.add_argument(flag, **options)


def overrides_from_args(args: argparse.Namespace, problems: list[str] | None = None,
                        environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """This run's values on top of the file: `DOTOCR_<KEY>` environment variables, then the flags given (a flag
    left out is None and overrides nothing). A bad environment value is ignored, its sentence added to
    `problems`. Never written to the file."""
    overrides, _sources = _run_values(args, problems, environ)
    return overrides


def setting_sources(args: argparse.Namespace | None, settings_file: SettingsFile,
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each setting's value comes from: "flag --x", "environment DOTOCR_X", "settings file" or "default"
    (for `dotocr doctor`)."""
    data = {}
    with contextlib.suppress(_Unreadable):
        data = settings_file._read() or {}
    sources = {name: "settings file" if name in data else "default" for name in _declared()}
    sources.update(_run_values(args, None, environ)[1])
    return sources


def _run_values(args: argparse.Namespace | None, problems: list[str] | None,
                environ: Mapping[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    names = _declared()
    values, sources = environment_values(os.environ if environ is None else environ, problems)
    given = {name: value for name, value in vars(args or argparse.Namespace()).items()
             if name in names and value is not None}
    values.update(given)
    sources.update({name: f"flag {names[name].flag or '--' + name.replace('_', '-')}" for name in given})
    if "remote_url" in given:  # --server URL: that server is the engine
        values.setdefault("engine", "remote")
        sources.setdefault("engine", sources["remote_url"])
    return values, sources


def environment_variable(name: str) -> str:
    """The environment variable of setting `name`: DOTOCR_ and the key in capitals."""
    return ENV_PREFIX + name.upper()


def environment_values(environ: Mapping[str, str], problems: list[str] | None = None
                       ) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, sources) of the settings given as `DOTOCR_<KEY>` variables: people switch 4-bit, fp16 and the
    CPU this way in shortcuts and services. Values are checked as the file's are; a bad one is left out."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, declared in _declared().items():
        variable = environment_variable(name)
        text = environ.get(variable)
        if text is None or not text.strip():
            continue
        value, problem = _parse_text(name, text.strip())
        problem = problem or _check(name, value, declared)
        if problem is not None:
            if problems is not None:
                problems.append(f"The environment variable {variable}: {problem} It is ignored.")
            continue
        values[name], sources[name] = value, f"environment {variable}"
    return values, sources


def _parse_text(name: str, text: str) -> tuple[Any, str | None]:
    """A setting's value from text (an environment variable), as its declared kind."""
    kind = type(default_of(name))
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True, None
        if lowered in ("0", "false", "no", "off"):
            return False, None
        return None, f"{name} = {_shown(text)} must be true or false."
    if kind is int:
        if len(text) > 30 or not text.lstrip("-").isdigit():
            return None, f"{name} = {_shown(text)} must be a whole number."
        return int(text), None
    return text, None


def settings_from_args(args: argparse.Namespace, base: Settings, problems: list[str] | None = None) -> Settings:
    """Apply this run's environment variables and flags on top of `base` (the file's settings)."""
    return base.replace(**overrides_from_args(args, problems))


def argument_type(name: str):
    """An argparse type for the whole-number setting `name`, with its declared range and special values."""
    declared = declaration(name)
    low = declared.minimum if declared.minimum is not None else -(2**63)
    high = declared.maximum
    special = [s for s in declared.special if isinstance(s, int)]

    def parse(text: str) -> int:
        if len(text) > 30:
            raise argparse.ArgumentTypeError(f"{text[:20]!r}... is not a whole number of a sensible size")
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value in special:
            return value
        if value < low or (high is not None and value > high):
            besides = f", or {' or '.join(map(str, special))} ({declared.special_means})" if special else ""
            raise argparse.ArgumentTypeError(
                (f"{value} must be at least {low}" if high is None else f"{value} must be from {low} to {high}")
                + besides)
        return value

    return parse


port_number = argument_type("api_port")
