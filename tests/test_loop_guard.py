"""The loop guard on its own: real loops are stopped early, real repeating content never is.

Text is tokenised with a byte-level BPE trained here, offline (under a second), with Qwen2's pre-tokenizer
(digits alone, `<td` `></` `td` split as in the real vocabulary) on `loop_corpus.training_text()`. That text
is small, so the vocabulary stays near 1,100 tokens and merges are capped at MAX_TOKEN_LENGTH bytes: it packs
long runs less than the real Qwen2 tokenizer (which writes 64 dots, or 8 box-drawing characters, as one
token), which makes the corpus check stricter, not looser. Checked once against the real Qwen2 vocabulary
(llama.cpp's vocab-only file, not available to the tests): every `LEGITIMATE` text passes there too, with 99
to 881 tokens, and here each takes at least as many tokens (asserted below), except Markdown separator rows,
which Qwen2 splits into `|` `---` per column, so that form is checked as token ids.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from loop_corpus import LEGITIMATE, QWEN2_SPLIT, training_text

from dotocr.engine.decoders import loop_guard
from dotocr.engine.decoders.loop_guard import LoopGuard, find_loop

pytestmark = pytest.mark.timeout(60)

MAX_TOKEN_LENGTH = 16


@pytest.fixture(scope="module")
def bpe():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8000, max_token_length=MAX_TOKEN_LENGTH, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(training_text(), trainer)
    return tokenizer


def ids(bpe, text: str) -> list[int]:
    return bpe.encode(text).ids


def feed(tokens: list[int], guard: LoopGuard | None = None) -> tuple[LoopGuard, int | None]:
    """Push tokens until the guard trips; (guard, how many tokens it had seen then, or None)."""
    guard = guard or LoopGuard()
    for count, token in enumerate(tokens, 1):
        if guard.push(token):
            return guard, count
    return guard, None


def ordinary(rng: random.Random, count: int) -> list[int]:
    return [rng.randint(5000, 60000) for _ in range(count)]


# -- real content that repeats is never cut -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_legitimate_repetition_passes_untouched(bpe, name):
    tokens = ids(bpe, LEGITIMATE[name])
    guard, tripped_at = feed(tokens)
    where = "" if tripped_at is None else bpe.decode(tokens[guard.loop_start:tripped_at])[:120]
    assert tripped_at is None, f"{name}: cut at token {tripped_at} by the {guard.rule} rule: {where!r}"
    assert find_loop(tokens) is None and guard.keep(tokens) == tokens
    assert bpe.decode(guard.keep(tokens)) == LEGITIMATE[name]


def test_the_corpus_is_tokenised_at_least_as_finely_as_by_qwen2(bpe):
    """Token counts the real Qwen2 vocabulary gives (measured once, see the module doc); ours are not fewer."""
    qwen2 = {"table_11_identical_rows": 529, "form_30_empty_rows": 641, "form_30_empty_rows_6_columns": 881,
             "attendance_31_empty_days": 759, "box_drawing_200_columns": 119, "toc_dot_leaders": 248,
             "numbered_list_to_60": 747, "blank_numbered_list_to_60": 352, "chinese_repeated_characters": 99,
             "formula_repeated_terms": 490}
    for name, count in qwen2.items():
        assert len(ids(bpe, LEGITIMATE[name])) >= count, name


def test_separator_rows_and_empty_cells_as_qwen2_splits_them(bpe):
    bar, dashes, bar_newline = ids(bpe, "|"), ids(bpe, "---"), ids(bpe, "|\n")
    assert len(bar) == len(dashes) == 1
    header = ids(bpe, "| " + " | ".join(f"Col {c}" for c in range(31)) + " |\n")
    row = header + (bar + dashes) * 31 + bar_newline + ids(bpe, "| 1 | 2 |")
    assert feed(row)[1] is None  # 31 columns: 62 tokens of period 2
    too_wide = header + (bar + dashes) * 40 + bar_newline
    assert feed(too_wide)[0].rule == "short"  # the documented limit: 33 and more columns are cut

    cell = ids(bpe, "><") + ids(bpe, "td") + ids(bpe, "></") + ids(bpe, "td")
    assert len(cell) == 4
    attendance = ids(bpe, "<tr><td>Ann</td") + cell * 31 + ids(bpe, "></tr>")
    assert feed(attendance * 6)[1] is None


# -- loops are stopped, early ----------------------------------------------------------------------


@pytest.mark.parametrize("period", [1, 2, 3])
def test_a_short_block_is_stopped_within_64_tokens(period):
    rng = random.Random(period)
    text = ordinary(rng, 100)
    block = [7 + i for i in range(period)]
    guard, tripped_at = feed(text + block * 400)
    assert guard.rule == "short" and guard.period == period and guard.loop_start == len(text)
    assert tripped_at - len(text) <= 64
    assert tripped_at - len(text) == loop_guard.SHORT_SPAN  # and not before the rule is met
    assert guard.keep(text + block * 400) == text + block


def test_a_run_just_short_of_the_span_passes():
    rng = random.Random(4)
    assert feed(ordinary(rng, 20) + [9] * 63 + ordinary(rng, 40))[1] is None


def test_dot_leader_and_underscore_loops(bpe):
    for prefix, unit in (("3.2 Results ", "."), ("Name: ", "_"), ("第一章 ", "…")):
        tokens = ids(bpe, prefix + unit * 3000)
        guard, tripped_at = feed(tokens)
        start = len(ids(bpe, prefix))
        assert guard.rule == "short" and tripped_at - guard.loop_start <= 64
        assert abs(guard.loop_start - start) <= 1
        kept = bpe.decode(guard.keep(tokens))
        assert kept.startswith(prefix) and len(kept) < len(prefix) + 2 * MAX_TOKEN_LENGTH


def test_loops_right_after_a_long_table_of_numbers(bpe):
    """A numeric table keeps many candidate periods alive; a loop after it must still find its own."""
    rng = random.Random(10)
    table = "<table>" + "".join(f"<tr><td>{rng.randint(0, 9)}</td><td>{rng.randint(10, 99)}</td></tr>"
                                for _ in range(300))
    before = len(ids(bpe, table))
    for tail, rule, within in (("." * 3000, "short", 64), ("<td></td>" * 300, "block", 4 * 40 + 8),
                               ("<tr><td></td><td></td><td></td><td></td></tr>" * 100, "block", 1000)):
        guard, tripped_at = feed(ids(bpe, table + tail))
        assert guard.rule == rule and before - 8 <= guard.loop_start and tripped_at - before <= within, tail[:20]


def test_the_empty_row_loop_is_stopped_after_40_copies(bpe):
    header = "<table><tr><td>Date</td><td>Item</td><td>Amount</td><td>Note</td></tr>"
    row = "<tr><td></td><td></td><td></td><td></td></tr>"
    tokens = ids(bpe, header + row * 300)
    guard, tripped_at = feed(tokens)
    row_tokens = len(ids(bpe, row + row)) // 2
    assert guard.rule == "block" and guard.period == row_tokens
    assert tripped_at - guard.loop_start == loop_guard.LOOSE_COPIES * row_tokens
    kept = bpe.decode(guard.keep(tokens))
    assert len(tokens) > 3 * tripped_at and kept.startswith(header[:40])
    assert kept.count("<tr>") in (2, 3) and len(kept) <= len(header) + 2 * len(row)  # one copy is kept


def test_the_same_cell_again_and_again(bpe):
    tokens = ids(bpe, "<table><tr><td>Total</td>" + "<td></td>" * 500)
    guard, tripped_at = feed(tokens)
    assert guard.period == 4 and tripped_at - guard.loop_start == 4 * loop_guard.LOOSE_COPIES


def test_a_looping_sentence_is_stopped_after_16_copies(bpe):
    intro = "Terms and conditions. "
    sentence = "Payment is due within thirty days of the invoice date, by bank transfer. "
    tokens = ids(bpe, intro + sentence * 100)
    guard, tripped_at = feed(tokens)
    assert guard.rule == "block" and len(set(tokens[guard.loop_start:][:guard.period])) >= 12
    assert (tripped_at - guard.loop_start) // guard.period == loop_guard.RICH_COPIES
    assert bpe.decode(guard.keep(tokens)).count("Payment") == 1


def test_a_wandering_tail_is_stopped():
    """A tail cycling among short patterns with a shifting phase has no exact period to count."""
    rng = random.Random(5)
    text = ordinary(rng, 80)
    patterns = [[11], [12, 11], [11, 12, 12], [13, 11]]
    tail: list[int] = []
    while len(tail) < 1000:
        tail += rng.choice(patterns)
    assert find_loop(tail[:200]) is not None  # sanity: the tail alone trips
    guard, tripped_at = feed(text + tail)
    assert guard.rule == "wander" and guard.loop_start == len(text)
    assert tripped_at - len(text) <= loop_guard.WANDER_WINDOW + 8
    kept = guard.keep(text + tail)
    assert kept[:len(text)] == text and len(kept) - len(text) == guard.period <= 8


def test_counting_loops_are_caught_only_far_past_a_real_list(bpe):
    listing = "Parts list:\n" + "".join(f"{n}. " for n in range(1, 2000))
    tokens = ids(bpe, listing)
    guard, tripped_at = feed(tokens)
    assert guard.rule == "count"
    seen = bpe.decode(tokens[:tripped_at])
    last = int(seen.rstrip(". ").rsplit(" ", 1)[-1].rstrip("."))
    assert 200 < last < 300  # far past a real list, far before 2000 items
    assert feed(ids(bpe, "Parts list:\n" + "".join(f"{n}. " for n in range(1, 200))))[1] is None
    rng = random.Random(9)  # a long table of arbitrary numbers has the same frame and changing digits
    numbers = "".join(f"<tr><td>{rng.randint(0, 9)}</td><td>{rng.randint(10, 99)}</td></tr>" for _ in range(900))
    assert feed(ids(bpe, f"<table>{numbers}</table>"))[1] is None
    rows = "".join(f"<tr><td>{n}</td><td></td><td></td></tr>" for n in range(1, 61))
    assert feed(ids(bpe, f"<table>{rows}</table>"))[1] is None  # a numbered form of 60 empty rows


# -- the loops the second red team found (issue 18): each stopped within the default 4096 tokens -----------


def _random_block(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5000, 60000) for _ in range(length)]


def _variant(block: list[int]) -> list[int]:
    changed = list(block)
    for place in (10, 50, 90, 120):
        changed[place] += 1
    return changed


def _evasive_loops(bpe) -> dict[str, tuple[list[int], int]]:
    """name -> (tokens, where the loop begins): each evaded the guard for 4096 tokens and more."""
    rng = random.Random(3)
    intro = ids(bpe, "Table 3: measurements taken on site.\n")
    text = ordinary(rng, 50)
    four = [100, 101, 102, 103]
    return {
        "two counting columns": (intro + ids(bpe, "".join(f"| {i} | {2000 + i} |\n" for i in range(1, 3000))),
                                 len(intro)),
        "<td>i</td><td>7i</td> rows": (intro + ids(bpe, "<table>" + "".join(
            f"<tr><td>{i}</td><td>{7 * i}</td></tr>" for i in range(1, 3000))), len(intro)),
        "a block of 257 tokens": (text + _random_block(257, 1) * 40, len(text)),
        "a block of 300 tokens": (text + _random_block(300, 2) * 40, len(text)),
        "a random tail over 4 tokens": (text + [rng.choice(four) for _ in range(5000)], len(text)),
        "two 130-token variants taking turns": (
            text + (_random_block(130, 4) + _variant(_random_block(130, 4))) * 40, len(text)),
    }


@pytest.mark.parametrize("name", ["two counting columns", "<td>i</td><td>7i</td> rows", "a block of 257 tokens",
                                  "a block of 300 tokens", "a random tail over 4 tokens",
                                  "two 130-token variants taking turns"])
def test_the_loops_that_evaded_the_guard_are_stopped_within_4096_tokens(bpe, name):
    tokens, begins = _evasive_loops(bpe)[name]
    guard, tripped_at = feed(tokens)
    assert tripped_at is not None and tripped_at <= 4096, f"{name}: not stopped within 4096 tokens"
    assert guard.loop_start is not None and guard.loop_start >= begins - 1
    assert guard.keep(tokens)[:begins] == tokens[:begins]  # what came before the loop is kept


def test_long_rich_blocks_need_a_span_not_sixteen_copies():
    """A 300-token block once needed 16 copies (4800 tokens); now 2048 tokens' worth, at least 4 copies."""
    text = ordinary(random.Random(12), 40)
    for length, copies in ((129, 16), (257, 8), (300, 7), (512, 4), (1024, 4)):
        guard, tripped_at = feed(text + _random_block(length, length) * 20)
        assert guard.rule == "block" and guard.period == length
        assert (tripped_at - len(text)) // length == copies
    rng = random.Random(13)
    loose = [rng.choice(range(20, 28)) for _ in range(200)]  # 8 different tokens: markup, empty cells
    assert feed(text + loose * 39)[1] is None  # a loose block keeps its 40 copies
    guard, tripped_at = feed(text + loose * 41)
    assert guard.rule == "block" and (tripped_at - len(text)) // 200 == loop_guard.LOOSE_COPIES


def test_a_thirty_row_blank_form_with_long_empty_rows_still_passes():
    """An attendance sheet left blank: 30 rows of 33 empty cells (132 tokens, few distinct) must pass."""
    row = [1, 2] + [3, 4, 5, 4] * 32 + [6, 7]
    tokens = [50, 51, 52] + row * 30 + [60, 61]
    assert feed(tokens)[1] is None


# -- the interface ---------------------------------------------------------------------------------


def test_push_stays_true_and_offline_agrees_with_online():
    rng = random.Random(6)
    for period in (1, 2, 5, 17, 60):
        block = [100 + i for i in range(period)]
        tokens = ordinary(rng, 50) + block * 100
        guard, tripped_at = feed(tokens)
        assert guard.triggered and guard.push(12345) and guard.push(7)
        assert find_loop(tokens) == find_loop(tokens[:tripped_at]) == (guard.loop_start, guard.period)
        assert guard.loop_start == 50 and guard.period == period


def test_ordinary_text_never_trips_and_keep_returns_everything():
    rng = random.Random(7)
    tokens = ordinary(rng, 5000)
    guard, tripped_at = feed(tokens)
    assert tripped_at is None and not guard.triggered and guard.loop_start is None and guard.period is None
    assert guard.keep(tokens) == tokens and guard.keep([]) == []


def test_thresholds_can_be_overridden():
    guard, tripped_at = feed([1, 2, 3] + [9] * 40, LoopGuard(short_span=20))
    assert tripped_at == 3 + 20 and guard.keep([1, 2, 3] + [9] * 40) == [1, 2, 3, 9]
    with pytest.raises(ValueError):
        LoopGuard(short_span=1)


def test_the_guard_module_uses_the_standard_library_only():
    """Every decoder shares it, the llama.cpp one included: it must not pull in torch or transformers."""
    import ast
    import sys

    tree = ast.parse(Path(loop_guard.__file__).read_text(encoding="utf-8"))
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert modules and modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_cost_per_token_stays_flat(bpe):
    """Amortised O(1): the last thousand tokens of a long mixed text cost no more than the first thousand."""
    rng = random.Random(8)
    pieces = [ids(bpe, LEGITIMATE[name]) for name in sorted(LEGITIMATE)] + [ordinary(rng, 700)]
    tokens: list[int] = []
    while len(tokens) < 40000:
        tokens += rng.choice(pieces)
    guard = LoopGuard(short_span=10**6, rich_copies=10**6, loose_copies=10**6, count_copies=10**6,
                      wander_window=10**6, long_span=10**6)  # never trips, so every token is pushed

    def timed(part: list[int]) -> float:
        started = time.perf_counter()
        for token in part:
            guard.push(token)
        return (time.perf_counter() - started) / len(part)

    first = timed(tokens[:4000])
    timed(tokens[4000:36000])
    last = timed(tokens[36000:40000])
    assert not guard.triggered
    assert last < 3 * first + 2e-6, f"{first * 1e6:.1f} us then {last * 1e6:.1f} us per token"
    assert last < 50e-6, f"{last * 1e6:.1f} us per token"
