"""The last N OCR results, newest first, kept in <data dir>/history.json.

The file is rewritten atomically through dotocr.storage with 0600 permissions, since it holds whatever
was on screen. A file we cannot use (not UTF-8, not our JSON, nested too deeply, wrong types, larger than
MAX_BYTES) is moved aside to history.json.broken-<time>, never overwritten, the tray starts with an empty
history, and `warning` says so in one sentence. Only the one running tray writes it (single_instance).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dotocr.config import data_dir
from dotocr.storage import FileTooLargeError, move_aside, read_limited, write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "history.json"
FORMAT_VERSION = 1
MAX_BYTES = 64_000_000
"""1000 entries (the largest history_size) of long pages fit; a bigger file is not ours."""


@dataclass(frozen=True)
class HistoryEntry:
    text: str
    time: float  # seconds since the epoch
    prompt: str = "text"
    chars: int = 0

    @property
    def label(self) -> str:
        """One line for a menu: the start of the text."""
        line = " ".join(self.text.split())
        return line if len(line) <= 40 else line[:39].rstrip() + "\u2026"


def default_history_path() -> Path:
    return data_dir() / FILE_NAME


class History:
    """Thread-safe: the OCR worker adds while the menu reads."""

    def __init__(self, path: Path | str | None = None, size: int = 20) -> None:
        self.path = Path(path) if path is not None else default_history_path()
        self.size = max(0, int(size))
        self.warning: str | None = None
        self._broken = False
        self._lock = threading.Lock()
        self._items: list[HistoryEntry] = self._load()[: self.size]

    def items(self) -> list[HistoryEntry]:
        with self._lock:
            return list(self._items)

    def add(self, text: str, *, prompt: str = "text", when: float | None = None) -> HistoryEntry | None:
        """Record a result at the top; blank text is skipped, and a repeat moves up instead of doubling."""
        if not text.strip():
            return None
        entry = HistoryEntry(text=text, time=time.time() if when is None else when, prompt=prompt,
                             chars=len(text))
        with self._lock:
            if self.size == 0:
                return None
            self._items = [entry, *(e for e in self._items if e.text != text)][: self.size]
            self._save()
        return entry

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = max(0, int(size))
            if len(self._items) > self.size:
                self._items = self._items[: self.size]
                self._save()

    def _load(self) -> list[HistoryEntry]:
        try:
            raw = read_limited(self.path, MAX_BYTES)
        except FileNotFoundError:
            return []
        except FileTooLargeError:
            return self._set_aside(f"larger than {MAX_BYTES // 1_000_000} MB")
        except OSError as exc:
            self._warn(f"The history file {self.path} could not be read ({exc.strerror or exc}); starting empty.")
            return []
        try:
            return _parse(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return self._set_aside("not UTF-8 text")
        except RecursionError:
            return self._set_aside("nested too deeply")
        except (ValueError, TypeError, KeyError, OverflowError, MemoryError) as exc:
            return self._set_aside(str(exc)[:100] or type(exc).__name__)

    def _set_aside(self, reason: str) -> list[HistoryEntry]:
        aside = move_aside(self.path)
        where = f"was moved to {aside}" if aside else "could not be moved aside and is left where it is"
        self._warn(f"The history file {self.path} was damaged ({reason}) and {where}; starting with an empty "
                   "history.")
        self._broken = aside is None
        return []

    def _save(self) -> None:
        if self._broken:  # a damaged file we could not move is never overwritten
            return
        payload = {"version": FORMAT_VERSION, "items": [asdict(e) for e in self._items]}
        try:
            text = json.dumps(payload, ensure_ascii=False, indent=1)
            write_atomic(self.path, text.encode("utf-8", "replace"))  # a lone surrogate becomes "?"
        except OSError as exc:
            log.warning("The history could not be saved to %s (%s).", self.path, exc.strerror or exc)

    def _warn(self, sentence: str) -> None:
        self.warning = sentence
        log.warning("%s", sentence)


def _parse(raw: str) -> list[HistoryEntry]:
    """Entries from the file's text; ValueError, TypeError, KeyError or RecursionError when it is not ours."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError("expected an object with an 'items' list")
    entries = []
    for item in data["items"]:
        if not isinstance(item, dict):
            raise ValueError("an item is not an object")
        text, when = item["text"], item["time"]
        if isinstance(when, int) and not isinstance(when, bool) and abs(when) > 10**12:
            raise ValueError("an item has an impossible time")
        prompt = item.get("prompt", "text")
        chars = item.get("chars", len(text) if isinstance(text, str) else 0)
        if not isinstance(text, str) or isinstance(when, bool) or not isinstance(when, int | float):
            raise ValueError("an item has a wrong text or time")
        if not isinstance(prompt, str) or isinstance(chars, bool) or not isinstance(chars, int):
            raise ValueError("an item has a wrong prompt or character count")
        entries.append(HistoryEntry(text=text, time=float(when), prompt=prompt, chars=chars))
    return entries
