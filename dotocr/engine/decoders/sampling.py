"""Picking each next token, and the token loop around it: one implementation for every decoder.

Decoders differ only in how they turn the last token into the next logits (`advance`); greedy choice,
temperature and top-p sampling, the per-token callback, eos and the token budget are decided here, so both
decoders stop for the same reasons and sample the same way from the same logits and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def pick_token(logits: np.ndarray, *, temperature: float = 0.0, top_p: float = 1.0,
               rng: np.random.Generator | None = None) -> int:
    """Greedy (the first highest logit) when temperature is 0, else a sample from the top-p nucleus."""
    logits = np.asarray(logits)
    if temperature <= 0.0:
        return int(np.argmax(logits))
    rng = rng if rng is not None else np.random.default_rng()
    scaled = logits.astype(np.float64) / temperature
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
    return int(rng.choice(probs.shape[0], p=probs))


def run_token_loop(first_logits: np.ndarray, advance: Callable[[int], np.ndarray], *, max_new_tokens: int,
                   on_token: Callable[[int], bool], eos_token_ids: Iterable[int] = (), temperature: float = 0.0,
                   top_p: float = 1.0, rng: np.random.Generator | None = None) -> list[int]:
    """Pick tokens until `on_token` says stop, an eos id is picked (kept in the result) or the budget is spent.

    `first_logits` are the logits after the prompt; `advance(token)` feeds one picked token to the model and
    returns the logits for the next. It is not called for the last token, whose successor is never needed.
    """
    eos = frozenset(eos_token_ids)
    if temperature > 0.0 and rng is None:
        rng = np.random.default_rng()
    tokens: list[int] = []
    logits = first_logits
    while len(tokens) < max_new_tokens:
        token = pick_token(logits, temperature=temperature, top_p=top_p, rng=rng)
        tokens.append(token)
        if on_token(token) or token in eos or len(tokens) >= max_new_tokens:
            break
        logits = advance(token)
    return tokens


__all__ = ["pick_token", "run_token_loop"]
