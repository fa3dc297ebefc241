"""The one per-token pipeline every decoder drives: clock, loop guard, end-of-text, streaming text.

A decoder (torch, llama.cpp) picks tokens; after each one it calls `TokenPipeline.push` with the token and the
probability the model gave it, which records both (`tokens`, `probabilities`) and when the first token came
(prefill ends there), feeds the loop guard, notices end-of-text, and hands new text to the listener, never half
a character. Its answer says whether to stop. Under speculative decoding the tokens of a verified draft arrive
one by one like any others, and a True answer ends the draft there. Stop reasons, trimming and token counts are
computed here too, so they are the same for every decoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .loop_guard import LoopGuard


class TextDeltas:
    """Hands `on_text` each new piece of decoded text, never half a character.

    A byte-level tokenizer can split one character (an accent, CJK, an emoji) over several tokens; while the
    decoded tail is an incomplete character (U+FFFD) it is held back, and sent once the next tokens complete
    it, or at the end. Decoding covers only the tokens since the last point where the text was complete (plus
    those before it as context), so each step costs the same.
    """

    MAX_PENDING_TOKENS = 4
    """A character is at most 4 bytes: a U+FFFD tail older than this is garbage, not a partial character."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.text = ""
        """Everything handed to on_text so far."""
        self._tokens: list[int] = []
        self._prefix_offset = 0  # context tokens start here
        self._read_offset = 0  # text of tokens from here on is not (fully) sent yet
        self._sent = 0  # characters already sent from the text after _read_offset

    def push(self, token: int) -> None:
        self._tokens.append(token)
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

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
            self.on_text(delta)


def token_pieces(tokenizer: Any, tokens: list[int], probabilities: list[float | None]
                 ) -> list[tuple[str, float]]:
    """(text, probability) per token: the characters each token added to the decoded answer, as a listener would
    have received them (a token ending mid-character adds nothing; the token that completes it adds it all)."""
    deltas = TextDeltas(tokenizer, lambda _text: None)
    ends: list[int] = []
    for token in tokens:
        deltas.push(token)
        ends.append(len(deltas.text))
    deltas.end()
    if ends:
        ends[-1] = len(deltas.text)
    starts = [0, *ends[:-1]]
    return [(deltas.text[a:b], 1.0 if p is None else float(p))
            for a, b, p in zip(starts, ends, probabilities, strict=True)]


class TokenPipeline:
    """What happens to each generated token, whichever decoder made it. Not thread-safe: one per generation."""

    def __init__(self, *, tokenizer: Any, eos_token_ids: Any, max_new_tokens: int,
                 on_text: Callable[[str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.eos = frozenset(int(t) for t in eos_token_ids)
        self.max_new_tokens = max_new_tokens
        self.guard = LoopGuard()
        self.tokens: list[int] = []
        self.probabilities: list[float | None] = []
        """The probability the model gave each token of `tokens` (softmax of that step's logits), same order;
        None where the caller did not say."""
        self.first_token_time: float | None = None
        self.cancelled = False
        self._deltas = TextDeltas(tokenizer, on_text) if on_text is not None else None
        self._should_stop = should_stop

    @property
    def streamed(self) -> bool:
        """Whether a listener has already received text (a retry would repeat it)."""
        return bool(self._deltas and self._deltas.text)

    def push(self, token: int, probability: float | None = None) -> bool:
        """Take one new token (and the probability the model gave it); True when generation must stop now."""
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.tokens.append(token)
        self.probabilities.append(probability)
        if token in self.eos:
            return True
        if self.guard.push(token):
            return True
        if self._deltas is not None:
            self._deltas.push(token)
        if self._should_stop is not None and self._should_stop():
            self.cancelled = True
            return True
        return len(self.tokens) >= self.max_new_tokens

    __call__ = push

    def finish(self) -> tuple[str, list[int]]:
        """(stop_reason, the tokens to keep): eos dropped, a loop cut to one copy of its block."""
        if self._deltas is not None:
            self._deltas.end()
        tokens = self.tokens
        if self.guard.triggered:
            return "repetition", self.guard.keep(tokens)
        if tokens and tokens[-1] in self.eos:
            return "eos", tokens[:-1]
        if self.cancelled:
            return "cancelled", tokens
        if len(tokens) >= self.max_new_tokens:
            return "max_new_tokens", tokens
        return "eos", tokens
