"""Picking each next token, and the token loop around it: one implementation for every decoder.

Decoders differ only in how they turn fed tokens into logits (`feed`) and how they forget fed tokens
(`rewind`); greedy choice, temperature and top-p sampling, speculative verification, each token's probability,
the per-token callback, eos and the token budget are decided here, so both decoders stop for the same reasons
and sample the same way from the same logits and seed.

With a `Drafter` the loop feeds the last picked token together with the drafted tokens in one batch and keeps
each drafted token only if the model, at that position, picks it: greedy, the argmax must equal it, so the
tokens are those of plain decoding; sampling, it is kept with the probability the model gives it and otherwise
replaced by a sample from the model's distribution without it, the standard rule for a draft that is one fixed
token (Leviathan et al. 2023, Chen et al. 2023), which leaves the output distribution exactly the model's. The
fed tokens that were not kept are rewound out of the model's cache before the next batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .speculation import Drafter

Feed = Callable[[Sequence[int]], np.ndarray]
"""Feeds tokens at the next positions; returns the logits after each of them (one row per token)."""
Rewind = Callable[[int], None]
"""Forgets the last n fed tokens: the next feed continues where they began."""


def token_probability(logits: np.ndarray, token: int) -> float:
    """The probability the model gives `token` at this step: softmax of the raw logits (temperature 1, no top-p),
    whatever the sampling settings, so it says how sure the model was."""
    logits = np.asarray(logits, dtype=np.float32)
    top = logits.max()
    return float(np.exp(logits[token] - top) / np.exp(logits - top).sum(dtype=np.float64))


def distribution(logits: np.ndarray, *, temperature: float, top_p: float) -> np.ndarray:
    """The sampling distribution: softmax at `temperature`, restricted to the top-p nucleus and renormalised."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Keep the smallest prefix whose mass reaches top_p (at least one token).
        keep = order[: int(np.searchsorted(cumulative, top_p)) + 1]
        nucleus = np.zeros_like(probs)
        nucleus[keep] = probs[keep]
        probs = nucleus / nucleus.sum()
    return probs


def pick_token(logits: np.ndarray, *, temperature: float = 0.0, top_p: float = 1.0,
               rng: np.random.Generator | None = None) -> int:
    """Greedy (the first highest logit) when temperature is 0, else a sample from the top-p nucleus."""
    logits = np.asarray(logits)
    if temperature <= 0.0:
        return int(np.argmax(logits))
    rng = rng if rng is not None else np.random.default_rng()
    probs = distribution(logits, temperature=temperature, top_p=top_p)
    return int(rng.choice(probs.shape[0], p=probs))


def verify_token(logits: np.ndarray, drafted: int, *, temperature: float = 0.0, top_p: float = 1.0,
                 rng: np.random.Generator | None = None) -> int:
    """The token the model writes where `drafted` was guessed: `drafted` itself when it is kept.

    Greedy: the argmax, kept when equal. Sampling: `drafted` kept with its probability p, else a sample from
    the distribution with `drafted` removed; P(drafted) = p and P(t) = (1 - p) q(t) / (1 - p) = q(t) for the
    others, so the token is distributed as `pick_token`'s.
    """
    if temperature <= 0.0:
        return int(np.argmax(logits))
    rng = rng if rng is not None else np.random.default_rng()
    probs = distribution(logits, temperature=temperature, top_p=top_p)
    chance = probs[drafted]
    if chance >= 1.0 or rng.random() < chance:
        return drafted
    probs[drafted] = 0.0
    return int(rng.choice(probs.shape[0], p=probs / probs.sum()))


def run_token_loop(first_logits: np.ndarray, feed: Feed, *, max_new_tokens: int,
                   on_token: Callable[[int, float], bool], eos_token_ids: Iterable[int] = (),
                   temperature: float = 0.0, top_p: float = 1.0, rng: np.random.Generator | None = None,
                   rewind: Rewind | None = None, drafter: Drafter | None = None,
                   plain_step: Callable[[], bool] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> list[int]:
    """Pick tokens until `on_token` says stop, an eos id is picked (kept in the result) or the budget is spent.

    `first_logits` are the logits after the prompt. `on_token(token, probability)` sees every token in order
    as soon as it is settled, drafted ones included, and the loop stops at once when it answers True, even in
    the middle of a verified draft. The last token is never fed (its successor is not needed). Without a
    `drafter` (or a `rewind`) every feed is one token; `plain_step()` answering True asks for one such step
    (the llama.cpp decoder's thread tuner times single tokens). `clock` times each feed for the drafter
    (benchmarks replaying answers pass a simulated one).
    """
    eos = frozenset(eos_token_ids)
    if temperature > 0.0 and rng is None:
        rng = np.random.default_rng()
    if rewind is None:
        drafter = None
    tokens: list[int] = []

    def settle(token: int, logits: np.ndarray) -> bool:
        tokens.append(token)
        stop = on_token(token, token_probability(logits, token))
        return bool(stop) or token in eos or len(tokens) >= max_new_tokens

    if max_new_tokens <= 0:
        return tokens
    token = pick_token(first_logits, temperature=temperature, top_p=top_p, rng=rng)
    if settle(token, first_logits):
        return tokens
    while True:
        draft: list[int] = []
        if drafter is not None and not (plain_step is not None and plain_step()):
            draft = drafter.propose(tokens, room=max_new_tokens - len(tokens) - 1)
        started = clock()
        rows = feed([token, *draft])
        seconds = clock() - started
        kept, stop = 0, False
        for row in rows[:len(draft)]:
            token = verify_token(row, draft[kept], temperature=temperature, top_p=top_p, rng=rng)
            stop = settle(token, row)
            if token != draft[kept]:
                break
            kept += 1
            if stop:
                break
        else:
            token = pick_token(rows[len(draft)], temperature=temperature, top_p=top_p, rng=rng)
            stop = settle(token, rows[len(draft)])
        if drafter is not None:
            drafter.settle(len(draft), kept, seconds)
        if kept < len(draft):
            rewind(len(draft) - kept)  # type: ignore[misc]  # a drafter implies a rewind
        if stop:
            return tokens


__all__ = ["distribution", "pick_token", "run_token_loop", "token_probability", "verify_token"]
