"""The generate() side of the loop guard (RepetitionGuard, a StoppingCriteria) and the text streamer.

The rules themselves are tested in tests/test_loop_guard.py; here: new tokens reach one LoopGuard per
sequence whatever the step size, eos is not fed, a batch is flagged per row, and inside a real generate().
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch

import dotocr.engine  # noqa: F401 - registers dots_ocr, so AutoTokenizer never asks about remote code
from dotocr.engine.generation import DeltaStreamer, RepetitionGuard
from dotocr.engine.loop_guard import SHORT_SPAN, find_loop

pytestmark = pytest.mark.timeout(120)

PROMPT = [1005, 1001] + [1000] * 3000 + [1002, 480, 260, 1006, 1007]  # 3000 identical image pads
DOTS, NEWLINE, PIPE, DASHES = 50, 11, 91, 92


def words(rng: random.Random, count: int) -> list[int]:
    """Ordinary text: no token repeats its predecessor pattern for long."""
    return [rng.randint(200, 900) for _ in range(count)]


def run_guard(generated: list[int], step: int = 1, eos: tuple[int, ...] = ()) -> tuple[RepetitionGuard, int | None]:
    """Feed PROMPT + generated to a new guard `step` tokens at a time; (guard, generated count at trip)."""
    guard = RepetitionGuard(len(PROMPT), eos)
    sequence = torch.tensor([PROMPT + generated])
    for end in range(step, len(generated) + step, step):
        end = min(end, len(generated))
        flags = guard(sequence[:, : len(PROMPT) + end], None)
        assert flags.shape == (1,) and flags.dtype == torch.bool
        if bool(flags[0]):
            return guard, end
    return guard, None


def test_the_prompts_image_pads_are_not_fed():
    guard, tripped_at = run_guard(words(random.Random(6), 300))
    assert tripped_at is None and not guard.triggered and guard.guard.tokens[:3] != [1000] * 3


def test_a_dot_loop_stops_generate_within_the_short_span():
    rng = random.Random(3)
    guard, tripped_at = run_guard(words(rng, 30) + [DOTS] * 1000)
    assert tripped_at == 30 + SHORT_SPAN and guard.guard.period == 1 and guard.guard.loop_start == 30


def test_several_tokens_per_call_give_the_same_verdict():
    generated = words(random.Random(4), 77) + [5, 6, 7] * 200
    one_by_one = run_guard(generated, step=1)
    in_chunks = run_guard(generated, step=13)
    assert one_by_one[0].guard.period == in_chunks[0].guard.period == 3
    assert one_by_one[0].guard.loop_start == in_chunks[0].guard.loop_start == 77
    assert in_chunks[1] - 13 < one_by_one[1] <= in_chunks[1]
    assert (one_by_one[0].guard.loop_start, 3) == find_loop(generated)


def test_eos_is_not_fed_to_the_guard():
    generated = words(random.Random(5), 20) + [7] * 40 + [978]
    guard, _ = run_guard(generated, eos=(978, 1008))
    assert 978 not in guard.guard.tokens and len(guard.guard.tokens) == 60


def test_each_sequence_of_a_batch_is_flagged():
    rng = random.Random(5)
    looping = words(rng, 20) + [7] * 400
    fine = words(rng, 420)
    guard = RepetitionGuard(len(PROMPT))
    batch = torch.tensor([PROMPT + looping, PROMPT + fine])
    flags = None
    for end in range(1, 421):
        flags = guard(batch[:, : len(PROMPT) + end], None)
    assert flags.tolist() == [True, False] and guard.triggered
    assert guard.guards[0].loop_start == 20 and not guard.guards[1].triggered


def test_guard_cost_per_call_stays_small_at_4000_tokens():
    rng = random.Random(10)
    generated = words(rng, 4000)
    guard = RepetitionGuard(len(PROMPT))
    sequence = torch.tensor([PROMPT + generated])
    for end in range(1, 3800):
        guard(sequence[:, : len(PROMPT) + end], None)
    started = time.perf_counter()
    for end in range(3800, 4001):
        guard(sequence[:, : len(PROMPT) + end], None)
    per_call = (time.perf_counter() - started) / 201
    assert not guard.triggered
    assert per_call < 0.0005, f"{per_call * 1e6:.0f} us per call"


# -- the streamer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(dots_tiny: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dots_tiny)


TEXT = "Grüße, Ölfaß — 中文字 😀 and naïve café.\nDone"


def test_streamer_sends_only_whole_characters(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    pieces: list[str] = []
    streamer = DeltaStreamer(tokenizer, pieces.append)
    streamer.put(torch.tensor([PROMPT]))  # generate() hands over the prompt first
    assert pieces == [] and streamer.first_token_time is None
    before = time.perf_counter()
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.put(torch.tensor([1008]))  # <|endofassistant|> is skipped
    streamer.end()
    assert streamer.first_token_time is not None and streamer.first_token_time >= before
    assert "".join(pieces) == TEXT == streamer.text
    assert all("\ufffd" not in piece for piece in pieces)
    assert len(pieces) < len(ids)  # multi-byte characters were held back until complete


def test_streamer_flushes_an_unfinished_character_at_the_end(tokenizer):
    ids = tokenizer.encode("ab😀", add_special_tokens=False)
    pieces: list[str] = []
    streamer = DeltaStreamer(tokenizer, pieces.append)
    streamer.put(torch.tensor([[1, 2, 3]]))
    streamer.put(torch.tensor([ids[:-1]]))  # 2-D, several tokens at once, last character cut short
    assert "".join(pieces) == "ab"
    streamer.end()
    assert streamer.text == tokenizer.decode(ids[:-1]) and streamer.text.startswith("ab")


def test_streamer_without_a_callback_only_keeps_the_clock(tokenizer):
    """With nobody listening it must cost nothing per token (the engine's overhead budget), but still time."""
    streamer = DeltaStreamer(tokenizer, None)
    streamer.put(torch.tensor([[1]]))
    assert streamer.first_token_time is None
    streamer.tokenizer = None  # any decoding attempt would now fail
    streamer.put(torch.tensor(tokenizer.encode("hello", add_special_tokens=False)))
    streamer.end()
    assert streamer.first_token_time is not None and streamer.text == ""
    with pytest.raises(ValueError):
        streamer.put(torch.tensor([[1], [2]]))


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


def test_guard_and_streamer_inside_generate(tokenizer):
    from transformers import LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM, StoppingCriteriaList

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096)
    model = Qwen2ForCausalLM(config).eval()
    prompt = [1005, 1001, 1000, 1000, 1002, 480, 260, 1006, 1007]
    script = tokenizer.encode("Résumé: 中文 — fine", add_special_tokens=False)
    loop = tokenizer.encode("\n____", add_special_tokens=False)
    guard = RepetitionGuard(len(prompt), (1008,))
    pieces: list[str] = []
    streamer = DeltaStreamer(tokenizer, pieces.append)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 32-wide model: extra threads only fight each other on a busy machine
    try:
        with torch.inference_mode():
            output = model.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=3000, do_sample=False, pad_token_id=978, eos_token_id=1008,
                logits_processor=LogitsProcessorList([ForcedScript(len(prompt), script, loop)]),
                stopping_criteria=StoppingCriteriaList([guard]), streamer=streamer)
    finally:
        torch.set_num_threads(threads)
    generated = output[0, len(prompt):].tolist()
    assert guard.triggered and guard.guard.period == len(loop) and guard.guard.loop_start == len(script)
    assert len(generated) == guard.guard.loop_start + 40 * len(loop)  # a 5-token block: 40 copies
    assert "".join(pieces) == tokenizer.decode(generated)
    assert all("\ufffd" not in piece for piece in pieces)
    assert tokenizer.decode(guard.guard.keep(generated)) == "Résumé: 中文 — fine\n____"
