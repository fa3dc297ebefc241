"""The per-token pipeline every decoder drives: streaming text deltas, stop reasons, and a real generate() loop.

The loop guard's own rules are tested in test_loop_guard.py; here it is exercised as the pipeline uses it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dotocr.engine.decoders.generation import TextDeltas, TokenPipeline
from dotocr.engine.decoders.sampling import run_token_loop
from dotocr.engine.decoders.speculation import Drafter

pytestmark = pytest.mark.timeout(120)

EOS = (978, 1008)


# -- the streamer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(dots_tiny: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dots_tiny)


TEXT = "Grüße, Ölfaß — 中文字 😀 and naïve café.\nDone"


def test_pipeline_streams_only_whole_characters_and_stops_at_eos(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    pieces: list[str] = []
    pipeline = TokenPipeline(tokenizer=tokenizer, eos_token_ids=EOS, max_new_tokens=1000, on_text=pieces.append)
    before = time.perf_counter()
    assert not any(pipeline.push(token) for token in ids)
    assert pipeline.push(1008)  # <|endofassistant|> stops, and is not streamed
    assert pipeline.finish() == ("eos", ids)
    assert pipeline.first_token_time is not None and pipeline.first_token_time >= before
    assert "".join(pieces) == TEXT
    assert all("\ufffd" not in piece for piece in pieces)
    assert len(pieces) < len(ids)  # multi-byte characters were held back until complete


def test_deltas_flush_an_unfinished_character_at_the_end(tokenizer):
    ids = tokenizer.encode("ab😀", add_special_tokens=False)
    pieces: list[str] = []
    deltas = TextDeltas(tokenizer, pieces.append)
    for token in ids[:-1]:  # the last character cut short
        deltas.push(token)
    assert "".join(pieces) == "ab"
    deltas.end()
    assert deltas.text == tokenizer.decode(ids[:-1]) and deltas.text.startswith("ab")


def test_pipeline_without_a_listener_never_decodes(tokenizer):
    """With nobody listening it must cost nothing per token (the engine's overhead budget), but still time."""
    pipeline = TokenPipeline(tokenizer=None, eos_token_ids=EOS, max_new_tokens=3)
    assert pipeline.first_token_time is None
    assert not pipeline.push(5) and not pipeline.push(6)
    assert pipeline.push(7)  # the third token reaches max_new_tokens
    assert pipeline.first_token_time is not None and not pipeline.streamed
    assert pipeline.finish() == ("max_new_tokens", [5, 6, 7])


def test_pipeline_stops_when_the_caller_says_so(tokenizer):
    calls = []
    pipeline = TokenPipeline(tokenizer=tokenizer, eos_token_ids=EOS, max_new_tokens=100,
                             should_stop=lambda: len(calls.append(1) or calls) >= 4)
    assert [pipeline.push(t) for t in (300, 301, 302, 303)] == [False, False, False, True]
    assert pipeline.finish() == ("cancelled", [300, 301, 302, 303])


# -- the shared token loop, drafting ----------------------------------------------------------------


class ScriptModel:
    """A stand-in model for the token loop: it writes `script`, then `loop` forever, whatever it is fed, and
    keeps count of what is in its cache (fed minus rewound) to catch a draft that is not rewound."""

    def __init__(self, script: list[int], loop: list[int], vocab: int = 1024) -> None:
        self.script, self.loop, self.vocab = script, loop, vocab
        self.position = 0  # generated tokens in the cache
        self.furthest = 0

    def token(self, index: int) -> int:
        if index < len(self.script):
            return self.script[index]
        return self.loop[(index - len(self.script)) % len(self.loop)]

    def row(self, index: int) -> np.ndarray:
        row = np.zeros(self.vocab, dtype=np.float32)
        row[self.token(index)] = 8.0
        return row

    def feed(self, tokens) -> np.ndarray:
        rows = np.stack([self.row(self.position + i + 1) for i in range(len(tokens))])
        self.position += len(tokens)
        self.furthest = max(self.furthest, self.position)
        return rows

    def rewind(self, count: int) -> None:
        self.position -= count


def test_pipeline_in_the_token_loop_stops_a_loop_inside_a_draft(tokenizer):
    """The loop guard stops the answer in the middle of a verified draft: nothing after its stop is kept,
    the text streamed is whole, and the drafted tokens past the stop are rewound."""
    script = tokenizer.encode("Résumé: 中文 — fine", add_special_tokens=False)
    loop = tokenizer.encode("\n____", add_special_tokens=False)
    model = ScriptModel(script, loop)
    pieces: list[str] = []
    pipeline = TokenPipeline(tokenizer=tokenizer, eos_token_ids=EOS, max_new_tokens=3000, on_text=pieces.append)
    drafter = Drafter()
    ticks = iter(range(1_000_000))  # every feed takes one tick whatever its size: long drafts pay
    generated = run_token_loop(model.row(0), model.feed, max_new_tokens=3000, on_token=pipeline,
                               eos_token_ids=EOS, rewind=model.rewind, drafter=drafter, clock=lambda: next(ticks))
    assert generated == pipeline.tokens and len(generated) < 3000
    assert generated == [model.token(i) for i in range(len(generated))]
    assert drafter.accepted_tokens > 0.7 * len(generated)  # the loop was drafted, most of it kept
    # it stopped on a drafted token (fed in its batch, so in the cache); the draft behind it was rewound
    assert model.furthest > model.position == len(generated)
    assert pipeline.probabilities == [pytest.approx(np.exp(8.0) / (np.exp(8.0) + 1023))] * len(generated)
    guard = pipeline.guard
    assert guard.triggered and guard.period == len(loop) and guard.loop_start == len(script)
    stop_reason, kept = pipeline.finish()
    assert stop_reason == "repetition"
    assert tokenizer.decode(kept) == "Résumé: 中文 — fine\n____"
    streamed = "".join(pieces)
    assert streamed.startswith("Résumé: 中文 — fine\n____") and tokenizer.decode(generated).startswith(streamed)
    assert all("\ufffd" not in piece for piece in pieces)
