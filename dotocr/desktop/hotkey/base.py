"""The hotkey value, its parser, and the protocol every platform backend follows."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from dotocr.errors import DotOCRError

MODIFIERS = ("ctrl", "alt", "shift", "win")
_MODIFIER_ALIASES = {
    "ctrl": "ctrl", "control": "ctrl", "ctl": "ctrl",
    "alt": "alt", "option": "alt",
    "shift": "shift",
    "win": "win", "super": "win", "meta": "win", "cmd": "win", "windows": "win",
}
# canonical key name -> aliases a person might type
_NAMED_KEYS = {
    "space": ("space", "spacebar"),
    "tab": ("tab",),
    "enter": ("enter", "return"),
    "esc": ("esc", "escape"),
    "backspace": ("backspace",),
    "insert": ("insert", "ins"),
    "delete": ("delete", "del"),
    "home": ("home",),
    "end": ("end",),
    "page_up": ("page_up", "pageup", "pgup"),
    "page_down": ("page_down", "pagedown", "pgdn"),
    "up": ("up",),
    "down": ("down",),
    "left": ("left",),
    "right": ("right",),
    "print_screen": ("print_screen", "printscreen", "print", "prtsc", "prtscr"),
    "pause": ("pause",),
}
_KEY_ALIASES = {alias: name for name, aliases in _NAMED_KEYS.items() for alias in aliases}
_FUNCTION_KEY = re.compile(r"f([1-9]|1[0-9]|2[0-4])")
# keys that make sense on their own, without a modifier
_STANDALONE = {"print_screen", "pause"}
_EXAMPLE = "Write it like ctrl+alt+shift+o (modifiers ctrl, alt, shift, win; then one key)."


class HotkeyError(DotOCRError):
    """The hotkey could not be registered: another program owns it, or this desktop has no global hotkeys."""


@dataclass(frozen=True)
class Hotkey:
    """A parsed combination: a set of modifiers and one key, both in canonical lower-case names."""

    modifiers: frozenset[str]
    key: str

    def __str__(self) -> str:
        return "+".join([m for m in MODIFIERS if m in self.modifiers] + [self.key])

    @property
    def is_function_key(self) -> bool:
        return bool(_FUNCTION_KEY.fullmatch(self.key))


def parse_hotkey(text: str) -> Hotkey:
    """Parse "Ctrl + Alt + Shift + O" style text; a ValueError sentence says what is wrong and how."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The hotkey is empty. {_EXAMPLE}")
    parts = [p.strip().lower() for p in text.split("+")]
    if any(not p for p in parts):
        raise ValueError(f"The hotkey {text!r} has an empty part between '+' signs. {_EXAMPLE}")
    *mods, key = parts
    modifiers: set[str] = set()
    for mod in mods:
        name = _MODIFIER_ALIASES.get(mod)
        if name is None:
            raise ValueError(f"The hotkey {text!r} has {mod!r} where a modifier belongs. {_EXAMPLE}")
        if name in modifiers:
            raise ValueError(f"The hotkey {text!r} names {name} twice. {_EXAMPLE}")
        modifiers.add(name)
    if key in _MODIFIER_ALIASES:
        raise ValueError(f"The hotkey {text!r} ends in a modifier; it needs an ordinary key last. {_EXAMPLE}")
    if (len(key) == 1 and key.isascii() and key.isalnum()) or _FUNCTION_KEY.fullmatch(key):
        canonical = key
    elif key in _KEY_ALIASES:
        canonical = _KEY_ALIASES[key]
    else:
        raise ValueError(f"The hotkey {text!r} ends in {key!r}, which is not a key we know: use a letter, "
                         f"a digit, f1-f24 or a named key such as space or print_screen. {_EXAMPLE}")
    hotkey = Hotkey(frozenset(modifiers), canonical)
    standalone = hotkey.is_function_key or canonical in _STANDALONE
    if not standalone and not (modifiers - {"shift"}):
        raise ValueError(f"The hotkey {text!r} would fire while you type; add ctrl, alt or win. {_EXAMPLE}")
    return hotkey


@runtime_checkable
class HotkeyBackend(Protocol):
    """One global hotkey at a time. The callback runs on the backend's thread and must only hand work over."""

    name: str

    @staticmethod
    def is_compatible() -> bool: ...

    def register(self, hotkey: Hotkey, callback: Callable[[], None]) -> None: ...

    def unregister(self) -> None: ...


def taken_message(hotkey: Hotkey) -> str:
    return (f"The hotkey {hotkey} is already taken by another program; close that program or choose another "
            "combination with --hotkey or the hotkey setting in the settings file.")


def guarded(callback: Callable[[], None]) -> Callable[[], None]:
    """Wrap a user callback so a raising one is logged and the backend's listener thread lives on."""

    def run() -> None:
        try:
            callback()
        except Exception:
            logging.getLogger(__name__).exception("The hotkey callback failed")

    return run
