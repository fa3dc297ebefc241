"""The shared token loop and sampler: greedy, temperature, top-p, and the three ways a loop stops."""

from __future__ import annotations

import numpy as np
import pytest

from dotocr.engine.decoders.sampling import pick_token, run_token_loop, token_probability


def test_greedy_takes_the_first_highest_logit():
    assert pick_token(np.array([0.1, 3.0, 3.0, -1.0], dtype=np.float32)) == 1
    assert pick_token(np.array([0.1, 3.0, 3.0]), temperature=0.0, top_p=0.1) == 1  # top_p ignored when greedy


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    draws = {pick_token(logits, temperature=1.0, top_p=0.7, rng=rng) for _ in range(400)}
    assert draws == {0, 1}  # 0.5 < 0.7 <= 0.8: the first two tokens, never the tail
    assert {pick_token(logits, temperature=1.0, top_p=0.5, rng=rng) for _ in range(100)} == {0}
    assert {pick_token(logits, temperature=1.0, top_p=1.0, rng=rng) for _ in range(2000)} == {0, 1, 2, 3}


def test_temperature_reshapes_the_distribution():
    logits = np.log(np.array([0.6, 0.4]))
    rng = np.random.default_rng(1)
    n = 4000
    share = {t: sum(pick_token(logits, temperature=t, rng=rng) == 0 for _ in range(n)) / n for t in (1.0, 0.25)}
    assert share[1.0] == pytest.approx(0.6, abs=0.03)
    assert share[0.25] == pytest.approx(0.6**4 / (0.6**4 + 0.4**4), abs=0.03)  # p^(1/T), renormalised


def test_same_seed_same_tokens():
    logits = np.random.default_rng(5).normal(size=50)
    draws = [[pick_token(logits, temperature=1.0, top_p=0.9, rng=np.random.default_rng(s)) for _ in range(3)]
             for s in (3, 3)]
    assert draws[0] == draws[1]


class Model:
    """Feeds the loop: token k is always followed by logits favouring k + 1."""

    def __init__(self) -> None:
        self.fed: list[int] = []

    @staticmethod
    def logits_after(token: int) -> np.ndarray:
        out = np.zeros(16)
        out[(token + 1) % 16] = 5.0
        return out

    def feed(self, tokens) -> np.ndarray:
        self.fed.extend(tokens)
        return np.stack([self.logits_after(token) for token in tokens])


def test_loop_runs_to_the_budget_without_feeding_the_last_token():
    model = Model()
    seen: list[int] = []
    out = run_token_loop(model.logits_after(0), model.feed, max_new_tokens=4,
                         on_token=lambda t, p: seen.append(t) is not None)
    assert out == seen == [1, 2, 3, 4]
    assert model.fed == [1, 2, 3]  # the 4th token's successor is never computed


def test_loop_stops_at_eos_keeping_it_and_when_told():
    model = Model()
    assert run_token_loop(model.logits_after(0), model.feed, max_new_tokens=10, eos_token_ids=(3, 9),
                          on_token=lambda t, p: False) == [1, 2, 3]
    calls: list[int] = []
    assert run_token_loop(model.logits_after(0), model.feed, max_new_tokens=10,
                          on_token=lambda t, p: calls.append(t) or len(calls) == 2) == [1, 2]
    assert run_token_loop(model.logits_after(0), model.feed, max_new_tokens=0, on_token=lambda t, p: False) == []


def test_each_token_comes_with_its_probability():
    """softmax of the step's raw logits at the chosen token, whatever the temperature."""
    model = Model()
    seen: list[tuple[int, float]] = []
    run_token_loop(model.logits_after(0), model.feed, max_new_tokens=3, on_token=lambda t, p: seen.append((t, p)))
    sure = np.exp(5.0) / (np.exp(5.0) + 15)
    assert [t for t, _ in seen] == [1, 2, 3] and all(p == pytest.approx(sure) for _, p in seen)
    assert token_probability(np.array([0.0, 0.0, np.log(2.0)]), 2) == pytest.approx(0.5)
