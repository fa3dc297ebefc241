"""Repetition guard, loop trimming and the text streamer: synthetic sequences and a real generate() loop."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch

import dotocr.engine  # noqa: F401 - registers dots_ocr, so AutoTokenizer never asks about remote code
from dotocr.engine.generation import (
    MIN_REPEATS,
    MIN_SPAN,
    DeltaStreamer,
    RepetitionGuard,
    find_repeated_tail,
    trim_repetition,
)

pytestmark = pytest.mark.timeout(120)

PROMPT = [1005, 1001] + [1000] * 3000 + [1002, 480, 260, 1006, 1007]  # 3000 identical image pads
DOTS, NEWLINE, PIPE, DASHES = 50, 11, 91, 92


def words(rng: random.Random, count: int) -> list[int]:
    """Ordinary text: no token repeats its predecessor pattern for long."""
    return [rng.randint(200, 900) for _ in range(count)]


def run_guard(generated: list[int], step: int = 1, **thresholds) -> tuple[RepetitionGuard, int | None]:
    """Feed PROMPT + generated to a new guard `step` tokens at a time; (guard, generated count at trip)."""
    guard = RepetitionGuard(len(PROMPT), **thresholds)
    sequence = torch.tensor([PROMPT + generated])
    for end in range(step, len(generated) + step, step):
        end = min(end, len(generated))
        flags = guard(sequence[:, : len(PROMPT) + end], None)
        assert flags.shape == (1,) and flags.dtype == torch.bool
        if bool(flags[0]):
            return guard, end
    return guard, None


# -- the guard trips on loops -----------------------------------------------------------------------


@pytest.mark.parametrize("period", [1, 2, 3, 7, 21, 40, 128])
def test_guard_trips_on_a_loop_far_before_the_token_limit(period):
    rng = random.Random(period)
    text = words(rng, 150)
    block = [10 + i for i in range(period)]  # tokens that ordinary text above never uses
    generated = text + block * 400
    guard, tripped_at = run_guard(generated)
    needed = max(MIN_SPAN, period * MIN_REPEATS)
    assert tripped_at == len(text) + needed  # exactly when the rule is met, not before
    assert tripped_at < 2000
    assert guard.triggered and guard.period == period and guard.loop_start == len(text)


def test_guard_trips_on_a_row_of_dots_and_on_a_looping_table_row():
    rng = random.Random(3)
    dots_loop = words(rng, 30) + [DOTS] * 1000
    guard, tripped_at = run_guard(dots_loop)
    assert tripped_at == 30 + MIN_SPAN and guard.period == 1

    row = [PIPE, 300, PIPE, 301, PIPE, 302, PIPE, NEWLINE]
    guard, tripped_at = run_guard(words(rng, 30) + row * 500)
    assert guard.triggered and guard.period == len(row) and tripped_at == 30 + MIN_SPAN


def test_guard_gives_the_same_answer_for_several_tokens_per_call():
    generated = words(random.Random(4), 77) + [5, 6, 7] * 200
    one_by_one = run_guard(generated, step=1)
    in_chunks = run_guard(generated, step=13)
    assert one_by_one[0].period == in_chunks[0].period == 3
    assert one_by_one[0].loop_start == in_chunks[0].loop_start == 77
    assert in_chunks[1] - 13 < one_by_one[1] <= in_chunks[1]


def test_guard_flags_each_sequence_of_a_batch():
    rng = random.Random(5)
    looping = words(rng, 20) + [7] * 400
    fine = words(rng, 420)
    guard = RepetitionGuard(len(PROMPT))
    batch = torch.tensor([PROMPT + looping, PROMPT + fine])
    flags = None
    for end in range(1, 421):
        flags = guard(batch[:, : len(PROMPT) + end], None)
    assert flags.tolist() == [True, False] and guard.triggered


# -- ... but not on repetition that real pages have ---------------------------------------------------


def test_guard_ignores_the_prompts_image_pads():
    guard, tripped_at = run_guard(words(random.Random(6), 300))
    assert tripped_at is None and not guard.triggered


def test_table_of_contents_dot_leaders_do_not_trip():
    rng = random.Random(7)
    generated = []
    for _ in range(120):
        leader = [DOTS] * rng.randint(3, 20)
        generated += words(rng, rng.randint(2, 6)) + leader + [rng.randint(600, 700), NEWLINE]
    assert run_guard(generated)[1] is None


def test_markdown_tables_and_a_few_identical_rows_do_not_trip():
    rng = random.Random(8)
    columns = 60
    header = [PIPE] + [t for i in range(columns) for t in (300 + i, PIPE)] + [NEWLINE]
    separator = [PIPE] + [DASHES, PIPE] * columns + [NEWLINE]
    empty_row = [PIPE] + [40, PIPE] * columns + [NEWLINE]  # 122 tokens, identical every time
    table = header + separator + empty_row * (MIN_REPEATS - 1) + words(rng, 40)
    assert run_guard(table)[1] is None
    # the same table with twelve identical rows is indistinguishable from a loop
    assert run_guard(header + separator + empty_row * MIN_REPEATS)[0].triggered


def test_a_run_just_below_the_span_does_not_trip():
    rng = random.Random(9)
    assert run_guard(words(rng, 10) + [DOTS] * (MIN_SPAN - 1) + words(rng, 50))[1] is None
    assert run_guard(words(rng, 10) + [DOTS] * MIN_SPAN)[1] == 10 + MIN_SPAN


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


# -- trimming -------------------------------------------------------------------------------------


def test_trim_keeps_one_copy_of_the_block():
    text = words(random.Random(11), 40)
    block = [10, 11, 12, 13]
    assert trim_repetition(text + block * 100 + block[:2]) == text + block
    assert trim_repetition(text + [DOTS] * 500) == text + [DOTS]


def test_trim_leaves_legitimate_repetition_alone():
    rng = random.Random(12)
    toc = words(rng, 10) + [DOTS] * 12 + [650]
    assert trim_repetition(toc) == toc
    rows = words(rng, 10) + [PIPE, 40, PIPE, NEWLINE] * 5
    assert trim_repetition(rows) == rows
    assert trim_repetition([]) == [] and trim_repetition([5]) == [5]


def test_trim_agrees_with_where_the_guard_stopped():
    rng = random.Random(13)
    for period in (1, 5, 33, 100):
        block = [10 + (i % 90) for i in range(period)]
        generated = words(rng, 60) + block * 300
        guard, tripped_at = run_guard(generated)
        produced = generated[:tripped_at]
        assert find_repeated_tail(produced) == (guard.loop_start, guard.period)
        assert trim_repetition(produced) == generated[: 60 + period]


def test_thresholds_are_adjustable():
    generated = [1, 2, 3] + [9] * 40
    assert run_guard(generated, min_span=30, min_repeats=5)[1] == 33
    assert trim_repetition(generated, min_span=30, min_repeats=5) == [1, 2, 3, 9]
    with pytest.raises(ValueError):
        RepetitionGuard(5, max_period=0)


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
    guard = RepetitionGuard(len(prompt))
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
    assert guard.triggered and guard.period == len(loop)
    assert len(generated) == len(script) + max(MIN_SPAN, len(loop) * MIN_REPEATS)
    assert "".join(pieces) == tokenizer.decode(generated)
    assert all("\ufffd" not in piece for piece in pieces)
    assert tokenizer.decode(trim_repetition(generated)) == "Résumé: 中文 — fine\n____"
