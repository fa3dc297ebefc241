"""An honest Retry-After: how long until a place in line is likely free, from recent generation times.

A place frees each time a generation ends, so the n-th request refused since the last admission is told to
come back after about n recent generation times (never more than the whole line's worth), which spreads a
burst of refused clients out instead of sending them all back at the same moment.
"""

from __future__ import annotations

import collections
import math
import threading

RECENT = 16
MAX_RETRY_AFTER_S = 3600


class Pacing:
    def __init__(self, fallback_s: int) -> None:
        self.fallback_s = fallback_s
        """What Retry-After says before any generation has finished."""
        self._durations: collections.deque[float] = collections.deque(maxlen=RECENT)
        self._refused = 0
        self._lock = threading.Lock()

    def finished(self, seconds: float) -> None:
        """A generation completed in `seconds` (called from the worker thread)."""
        with self._lock:
            self._durations.append(seconds)

    def admitted(self) -> None:
        with self._lock:
            self._refused = 0

    def refused(self, in_line: int) -> int:
        """Seconds for the Retry-After of a request refused while `in_line` requests hold places."""
        with self._lock:
            self._refused += 1
            if not self._durations:
                return self.fallback_s
            typical = sum(self._durations) / len(self._durations)
            places = min(self._refused, max(1, in_line))
            return max(1, min(MAX_RETRY_AFTER_S, math.ceil(typical * places)))
