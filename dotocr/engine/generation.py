"""Generation helpers: stop a looping model early, trim the loop, and stream clean text deltas.

dots.ocr sometimes falls into a loop on rows of dots, underscores or identical table rows and would
then write the same block until max_new_tokens (minutes on a small GPU). `RepetitionGuard` stops it
once the generated tail is one block of 1..MAX_PERIOD tokens repeated back to back over at least
MIN_SPAN tokens and at least MIN_REPEATS times. The thresholds and why:

* MIN_SPAN = 256 tokens. Legitimate runs stay below it: a table-of-contents dot leader is a few
  multi-dot tokens per line, a Markdown separator row is at most two tokens per column, and a rule
  of box-drawing characters across a very wide terminal is under 256 tokens. A loop reaches 256 in
  seconds, far before the default limit of 4096.
* MIN_REPEATS = 12. Long blocks need many copies: a table with a few (up to 11) identical rows is
  real content, whatever the row length; twelve or more identical rows of a wide row are a loop.
* MAX_PERIOD = 128 tokens covers a repeated sentence or a whole table row; a block of 128 tokens
  needs 12 x 128 = 1536 tokens to trip, still well under the default limit.

The guard keeps, for every period p, how many trailing tokens equal the token p places before them,
updated in O(MAX_PERIOD) per new token, so the cost does not grow with the sequence.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

MAX_PERIOD = 128
MIN_REPEATS = 12
MIN_SPAN = 256


def _run_needed(period: int, min_repeats: int, min_span: int) -> int:
    """Trailing matches at distance `period` that make a tail of the required span and copies."""
    return max(min_span, period * min_repeats) - period


class _TailTracker:
    """Per-sequence state: for each period p with a live run, how many trailing tokens equal the token p back.

    Only live runs and the recent occurrences of the new token are visited, so ordinary text costs a few
    dictionary steps per token; only an actual loop touches many periods, and a loop is stopped soon.
    """

    __slots__ = ("tokens", "runs", "seen_at", "needed", "max_period", "period", "start")

    def __init__(self, needed: list[int]) -> None:
        self.tokens: list[int] = []
        self.runs: dict[int, int] = {}  # period -> run length, only runs > 0
        self.seen_at: dict[int, deque[int]] = {}  # token -> its positions within the last max_period
        self.needed = needed  # needed[p]; index 0 unused
        self.max_period = len(needed) - 1
        self.period: int | None = None
        self.start: int | None = None

    def push(self, token: int) -> None:
        tokens, count = self.tokens, len(self.tokens)
        runs = {p: run + 1 for p, run in self.runs.items() if tokens[count - p] == token}
        positions = self.seen_at.setdefault(token, deque())
        while positions and positions[0] < count - self.max_period:
            positions.popleft()
        for position in positions:  # a run starts wherever the same token sat p places back
            runs.setdefault(count - position, 1)
        self.runs = runs
        positions.append(count)
        tokens.append(token)
        if self.period is None:
            hits = [p for p, run in runs.items() if run >= self.needed[p]]
            if hits:
                period = min(hits)
                self.period, self.start = period, count + 1 - runs[period] - period


class RepetitionGuard(StoppingCriteria):
    """Stops generation when the generated tail is one block repeated over and over (see module doc)."""

    def __init__(self, prompt_length: int, *, max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS,
                 min_span: int = MIN_SPAN) -> None:
        if max_period < 1 or min_repeats < 2 or min_span < 2:
            raise ValueError("max_period must be >= 1, min_repeats and min_span >= 2")
        self.prompt_length = prompt_length
        self._needed = [0] + [_run_needed(p, min_repeats, min_span) for p in range(1, max_period + 1)]
        self._trackers: list[_TailTracker] = []
        self._no_stop: torch.Tensor | None = None
        self._seen = prompt_length
        self.triggered = False
        self.period: int | None = None
        """Length in tokens of the repeated block that tripped the guard (first sequence that tripped)."""
        self.loop_start: int | None = None
        """Index, among the generated tokens, where that repetition began."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None,
                 **kwargs: Any) -> torch.BoolTensor:
        batch, length = input_ids.shape
        if len(self._trackers) != batch or length < self._seen:
            self._trackers = [_TailTracker(self._needed) for _ in range(batch)]
            self._seen = self.prompt_length
        if length > self._seen:
            new_rows = input_ids[:, self._seen:].tolist()  # one small transfer per step
            self._seen = length
            for tracker, new_tokens in zip(self._trackers, new_rows, strict=True):
                for token in new_tokens:
                    if tracker.period is not None:
                        break
                    tracker.push(token)
        flags = [tracker.period is not None for tracker in self._trackers]
        if not any(flags):  # the common case: one cached all-False answer, no new tensor per step
            if self._no_stop is None or self._no_stop.shape[0] != batch or self._no_stop.device != input_ids.device:
                self._no_stop = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
            return self._no_stop
        if not self.triggered:
            for tracker in self._trackers:
                if tracker.period is not None:
                    self.triggered, self.period, self.loop_start = True, tracker.period, tracker.start
                    break
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


def find_repeated_tail(token_ids: Sequence[int], *, max_period: int = MAX_PERIOD,
                       min_repeats: int = MIN_REPEATS, min_span: int = MIN_SPAN) -> tuple[int, int] | None:
    """(start, period) of the loop ending `token_ids` by the guard's rule, or None when there is none."""
    tokens = list(token_ids)
    count = len(tokens)
    for period in range(1, min(max_period, count - 1) + 1):
        run = 0
        index = count - 1
        while index - period >= 0 and tokens[index] == tokens[index - period]:
            run += 1
            index -= 1
        if run >= _run_needed(period, min_repeats, min_span):
            return count - run - period, period
    return None


def trim_repetition(token_ids: Sequence[int], *, max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS,
                    min_span: int = MIN_SPAN) -> list[int]:
    """`token_ids` with a looping tail cut down to one copy of the repeated block; unchanged otherwise."""
    found = find_repeated_tail(token_ids, max_period=max_period, min_repeats=min_repeats, min_span=min_span)
    if found is None:
        return list(token_ids)
    start, period = found
    return list(token_ids[: start + period])


class DeltaStreamer(BaseStreamer):
    """Hands `on_text` each new piece of decoded text, never half a character.

    A byte-level tokenizer can split one character (an accent, CJK, an emoji) over several tokens;
    while the decoded tail is an incomplete character (U+FFFD) it is held back, and sent once the
    next tokens complete it, or at the end. Decoding covers only the tokens since the last point
    where the text was complete (plus those before it as context), so each step costs the same.
    """

    MAX_PENDING_TOKENS = 4
    """A character is at most 4 bytes: a U+FFFD tail older than this is garbage, not a partial character."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None] | None,
                 skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.skip_special_tokens = skip_special_tokens
        self.first_token_time: float | None = None
        """time.perf_counter() when the first generated token arrived (prefill ends there)."""
        self.text = ""
        """Everything handed to on_text so far."""
        self._tokens: list[int] = []
        self._prefix_offset = 0  # context tokens start here
        self._read_offset = 0  # text of tokens from here on is not (fully) sent yet
        self._sent = 0  # characters already sent from the text after _read_offset
        self._prompt_skipped = False

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError("DeltaStreamer follows one sequence; generate with a batch of one.")
            value = value[0]
        if not self._prompt_skipped:  # generate() first hands over the prompt
            self._prompt_skipped = True
            return
        ids = value.tolist()
        if not ids:
            return
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        if self.on_text is None:  # nobody listens: keep the clock, skip the decoding
            return
        self._tokens.extend(ids)
        self._emit(final=False)

    def end(self) -> None:
        if self.on_text is not None:
            self._emit(final=True)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _emit(self, *, final: bool) -> None:
        context = self._decode(self._tokens[self._prefix_offset:self._read_offset])
        current = self._decode(self._tokens[self._prefix_offset:])
        complete = (final or not current.endswith("\ufffd")
                    or len(self._tokens) - self._read_offset > self.MAX_PENDING_TOKENS)
        stable = current if complete else current.rstrip("\ufffd")
        delta = stable[len(context) + self._sent:]
        if complete:
            self._prefix_offset, self._read_offset, self._sent = self._read_offset, len(self._tokens), 0
        else:
            self._sent += len(delta)
        if delta:
            self.text += delta
            if self.on_text is not None:
                self.on_text(delta)
