"""Generation helpers for transformers' generate(): stop a looping model early, and stream clean text deltas.

`RepetitionGuard` is the StoppingCriteria face of `loop_guard.LoopGuard`, which holds the rules (why and
which thresholds: see that module); it only hands the new tokens of each step to one LoopGuard per sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from .loop_guard import LoopGuard


class RepetitionGuard(StoppingCriteria):
    """Stops generate() once a sequence's generated tail is a loop; `guards[i]` holds sequence i's verdict."""

    def __init__(self, prompt_length: int, eos_token_ids: Sequence[int] = ()) -> None:
        self.prompt_length = prompt_length
        self.eos_token_ids = frozenset(eos_token_ids)
        self.guards: list[LoopGuard] = []
        self._no_stop: torch.Tensor | None = None
        self._seen = prompt_length

    @property
    def triggered(self) -> bool:
        return any(guard.triggered for guard in self.guards)

    @property
    def guard(self) -> LoopGuard | None:
        """The first sequence's LoopGuard (the engine generates one sequence at a time)."""
        return self.guards[0] if self.guards else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None,
                 **kwargs: Any) -> torch.BoolTensor:
        batch, length = input_ids.shape
        if len(self.guards) != batch or length < self._seen:
            self.guards = [LoopGuard() for _ in range(batch)]
            self._seen = self.prompt_length
        if length > self._seen:
            new_rows = input_ids[:, self._seen:].tolist()  # one small transfer per step
            self._seen = length
            eos = self.eos_token_ids
            for guard, new_tokens in zip(self.guards, new_rows, strict=True):
                for token in new_tokens:
                    if guard.triggered or token in eos:
                        break
                    guard.push(token)
        flags = [guard.triggered for guard in self.guards]
        if not any(flags):  # the common case: one cached all-False answer, no new tensor per step
            if self._no_stop is None or self._no_stop.shape[0] != batch or self._no_stop.device != input_ids.device:
                self._no_stop = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
            return self._no_stop
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


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
