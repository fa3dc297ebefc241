"""The last N OCR results, newest first, kept in <data dir>/history.json.

The file is rewritten atomically (temporary file + os.replace) with 0600 permissions, since it holds
whatever was on screen. A file we cannot read is moved aside to history.json.bad (then .bad.2, ...),
never overwritten, and `warning` says so in one sentence.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from dotocr.config import data_dir

log = logging.getLogger(__name__)

FILE_NAME = "history.json"
FORMAT_VERSION = 1


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

    def clear(self) -> None:
        with self._lock:
            self._items = []
            self._save()

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = max(0, int(size))
            if len(self._items) > self.size:
                self._items = self._items[: self.size]
                self._save()

    def _load(self) -> list[HistoryEntry]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._warn(f"The history file {self.path} could not be read ({exc.strerror}); starting empty.")
            return []
        try:
            return _parse(raw)
        except (ValueError, TypeError, KeyError) as exc:
            aside = self._move_aside()
            where = f"moved to {aside}" if aside else "left where it is"
            self._warn(f"The history file {self.path} was damaged ({exc}) and was {where}; starting empty.")
            return []

    def _move_aside(self) -> Path | None:
        candidate = self.path.with_name(self.path.name + ".bad")
        number = 2
        while candidate.exists():
            candidate = self.path.with_name(f"{self.path.name}.bad.{number}")
            number += 1
        try:
            os.replace(self.path, candidate)
        except OSError:
            return None
        return candidate

    def _save(self) -> None:
        payload = {"version": FORMAT_VERSION, "items": [asdict(e) for e in self._items]}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, ensure_ascii=False, indent=1)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("The history could not be saved to %s (%s).", self.path, exc.strerror or exc)

    def _warn(self, sentence: str) -> None:
        self.warning = sentence
        log.warning("%s", sentence)


def _parse(raw: str) -> list[HistoryEntry]:
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError("expected an object with an 'items' list")
    entries = []
    for item in data["items"]:
        if not isinstance(item, dict):
            raise ValueError("an item is not an object")
        text, when = item["text"], item["time"]
        prompt = item.get("prompt", "text")
        chars = item.get("chars", len(text) if isinstance(text, str) else 0)
        if not isinstance(text, str) or isinstance(when, bool) or not isinstance(when, int | float):
            raise ValueError("an item has a wrong text or time")
        if not isinstance(prompt, str) or isinstance(chars, bool) or not isinstance(chars, int):
            raise ValueError("an item has a wrong prompt or character count")
        entries.append(HistoryEntry(text=text, time=float(when), prompt=prompt, chars=chars))
    return entries
