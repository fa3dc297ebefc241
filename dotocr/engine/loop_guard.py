"""The loop guard: stop a generation whose tail has started repeating, whatever decoder produced it.

dots.ocr sometimes falls into a loop on rows of dots, underscores or identical table rows and would then
write the same block until max_new_tokens (minutes on a small GPU). `LoopGuard` sees every generated token
once (`push`) and says when the tail is one block of 1..MAX_PERIOD tokens repeated back to back over at least
MIN_SPAN tokens and at least MIN_REPEATS times. The thresholds and why:

* MIN_SPAN = 256 tokens. Legitimate runs stay below it: a table-of-contents dot leader is a few multi-dot
  tokens per line, a Markdown separator row is at most two tokens per column, and a rule of box-drawing
  characters across a very wide terminal is under 256 tokens.
* MIN_REPEATS = 12. Long blocks need many copies: a table with a few (up to 11) identical rows is real
  content, whatever the row length; twelve or more identical rows of a wide row are a loop.
* MAX_PERIOD = 128 tokens covers a repeated sentence or a whole table row.

For every period p with a live run the guard keeps how many trailing tokens equal the token p places before
them; only live runs and recent occurrences of the new token are visited, so ordinary text costs a few
dictionary steps per token. Pure Python: it serves the torch and the llama.cpp decoders alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

MAX_PERIOD = 128
MIN_REPEATS = 12
MIN_SPAN = 256


def _run_needed(period: int) -> int:
    """Trailing matches at distance `period` that make a tail of the required span and copies."""
    return max(MIN_SPAN, period * MIN_REPEATS) - period


class LoopGuard:
    """Feed it each generated token; it turns `triggered` once the tail loops (see the module doc)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._runs: dict[int, int] = {}  # period -> run length, only runs > 0
        self._seen_at: dict[int, deque[int]] = {}  # token -> its positions within the last MAX_PERIOD
        self.triggered = False
        self.period: int | None = None
        """Length in tokens of the repeated block that tripped the guard."""
        self.loop_start: int | None = None
        """Index, among the generated tokens, where that repetition began."""

    def push(self, token: int) -> bool:
        """Take one generated token; True once a loop has been seen (and from then on)."""
        if self.triggered:
            return True
        tokens, count = self.tokens, len(self.tokens)
        runs = {p: run + 1 for p, run in self._runs.items() if tokens[count - p] == token}
        positions = self._seen_at.setdefault(token, deque())
        while positions and positions[0] < count - MAX_PERIOD:
            positions.popleft()
        for position in positions:  # a run starts wherever the same token sat p places back
            runs.setdefault(count - position, 1)
        self._runs = runs
        positions.append(count)
        tokens.append(token)
        hits = [p for p, run in runs.items() if run >= _run_needed(p)]
        if hits:
            period = min(hits)
            self.triggered, self.period = True, period
            self.loop_start = count + 1 - runs[period] - period
        return self.triggered

    def keep(self, tokens: Sequence[int]) -> list[int]:
        """`tokens` up to the loop's start plus one copy of the repeated block; all of them without a loop."""
        if self.loop_start is None or self.period is None:
            return list(tokens)
        return list(tokens[: self.loop_start + self.period])


def find_loop(tokens: Sequence[int]) -> tuple[int, int] | None:
    """(start, period) of the loop ending `tokens` by the guard's rule, or None when there is none."""
    guard = LoopGuard()
    for token in tokens:
        if guard.push(token):
            assert guard.loop_start is not None and guard.period is not None
            return guard.loop_start, guard.period
    return None
