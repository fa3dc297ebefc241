"""The protocol every notification backend follows."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Notifier(Protocol):
    """Shows one short message. Never raises and never blocks the caller for long."""

    name: str

    @staticmethod
    def is_compatible(icon: Any = None) -> bool: ...

    def notify(self, title: str, message: str) -> None: ...
