"""The per-token pipeline every decoder drives: streaming text deltas, stop reasons, and a real generate() loop.

The loop guard's own rules are tested in test_loop_guard.py; here it is exercised as the pipeline uses it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from dotocr.engine.decoders.generation import TextDeltas, TokenPipeline
from dotocr.engine.decoders.torch_decoder import _PerToken

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


# -- the real generate() loop ---------------------------------------------------------------------


class ForcedScript:
    """Logits processor that makes a real tiny model write a given script: text, then a loop forever."""

    def __init__(self, prompt_length: int, script: list[int], loop: list[int]) -> None:
        self.prompt_length, self.script, self.loop = prompt_length, script, loop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        position = input_ids.shape[1] - self.prompt_length
        if position < len(self.script):
            token = self.script[position]
        else:
            token = self.loop[(position - len(self.script)) % len(self.loop)]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, token] = 0.0
        return forced


def test_pipeline_inside_generate_stops_a_loop(tokenizer):
    """The torch decoder's per-token adapter inside a real generate(): text streams, the loop is cut."""
    from transformers import LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM, StoppingCriteriaList

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    model = Qwen2ForCausalLM(config).eval()
    prompt = [1005, 1001, 1000, 1000, 1002, 480, 260, 1006, 1007]
    script = tokenizer.encode("Résumé: 中文 — fine", add_special_tokens=False)
    loop = tokenizer.encode("\n____", add_special_tokens=False)
    pieces: list[str] = []
    pipeline = TokenPipeline(tokenizer=tokenizer, eos_token_ids=EOS, max_new_tokens=3000, on_text=pieces.append)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: extra threads only fight each other on a busy machine
    try:
        with torch.inference_mode():
            output = model.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=3000, do_sample=False, pad_token_id=978, eos_token_id=1008,
                logits_processor=LogitsProcessorList([ForcedScript(len(prompt), script, loop)]),
                stopping_criteria=StoppingCriteriaList([_PerToken(len(prompt), pipeline)]))
    finally:
        torch.set_num_threads(threads)
    generated = output[0, len(prompt):].tolist()
    assert generated == pipeline.tokens and len(generated) < 3000
    guard = pipeline.guard
    assert guard.triggered and guard.period == len(loop) and guard.loop_start == len(script)
    stop_reason, kept = pipeline.finish()
    assert stop_reason == "repetition"
    assert tokenizer.decode(kept) == "Résumé: 中文 — fine\n____"
    streamed = "".join(pieces)
    assert streamed.startswith("Résumé: 中文 — fine\n____") and tokenizer.decode(generated).startswith(streamed)
    assert all("\ufffd" not in piece for piece in pieces)
