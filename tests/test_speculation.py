"""Speculative decoding: the drafter, the acceptance rule, and both decoders writing plain decoding's tokens.

The answers of each kind (layout JSON, HTML table, Markdown table, prose) are the replay corpus's
(benchmarks/corpus, real documents' text), written by tiny models steered towards them: a tiny model's logits
plus a bias of 4 standard deviations of the row on the answer's next token, so the model follows the answer
most of the time and its own choice elsewhere. Its tokens then depend on the model and on its KV cache, as a
real model's do, and drafts from the answer's repetitions are accepted and rejected as they would be.
The drafters here get fixed batch costs, so which drafts are made does not depend on the machine's timing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from dotocr.engine.decoders.base import DecodeRequest
from dotocr.engine.decoders.sampling import distribution, pick_token, run_token_loop, verify_token
from dotocr.engine.decoders.speculation import EXPLORE_EVERY, BatchCosts, Drafter, NgramIndex
from dotocr.engine.decoders.torch_decoder import TorchDecoder
from dotocr.engine.model.modeling_dots_ocr import DotsOCRForCausalLM
from tests.tiny_models import llamacpp_plan, save_scripted_checkpoint, save_tiny_checkpoint

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "benchmarks" / "corpus" / "answers.jsonl.gz"
KINDS = ("layout_json", "html_table", "markdown_table", "prose")
ANSWERS_PER_KIND = 200
ANSWER_TOKENS = 32
PROMPT = [1005, 480, 260, 1006, 1007]  # <|user|> two text tokens <|endofuser|><|assistant|>, no image
EOS = (978, 1008)


class FixedCosts(BatchCosts):
    """Batch costs that do not depend on timing: every batch costs `per_token` more per extra token."""

    def __init__(self, per_token: float = 0.0) -> None:
        super().__init__()
        self.per_token = per_token

    def record(self, batch: int, seconds: float) -> None:
        pass

    def known(self) -> bool:
        return True

    def cost(self, batch: int) -> float:
        return 1.0 + self.per_token * (batch - 1)


class Guesser(Drafter):
    """A drafter that proposes given guesses (right or wrong), to force accepted and rejected drafts."""

    def __init__(self, guess) -> None:
        super().__init__(costs=FixedCosts())
        self.guess = guess

    def propose(self, answer: Sequence[int], room: int) -> list[int]:
        self._pending = (0, 1)
        return list(self.guess(list(answer)))[:room]


def drafter() -> Drafter:
    return Drafter(costs=FixedCosts())


# -- the drafter -------------------------------------------------------------------------------------------

def test_ngram_index_continues_the_latest_match_and_extends_a_period():
    index = NgramIndex()
    index.extend([1, 2, 3, 9, 1, 2, 4, 5, 1, 2])
    assert index.continuation(3) == (2, [4, 5, 1])  # "1 2" last went on with 4 5
    index.extend([7, 8, 7, 8, 7])
    assert index.continuation(5) == (3, [8, 7, 8, 7, 8])  # the "7 8" cycle drafts itself past the end
    empty = NgramIndex()
    empty.extend([1, 2, 3])
    assert empty.continuation(4) == (0, [])


def replay(answer: list[int], drafter: Drafter) -> int:
    """Feeds a stand-in model that writes `answer`; returns the number of feeds (verification steps)."""
    feeds, position = [], [0]

    def row(index: int) -> np.ndarray:
        out = np.zeros(64, dtype=np.float32)
        out[answer[min(index, len(answer) - 1)]] = 5.0
        return out

    def feed(tokens):
        feeds.append(len(tokens))
        rows = np.stack([row(position[0] + i + 1) for i in range(len(tokens))])
        position[0] += len(tokens)
        return rows

    def rewind(count: int) -> None:
        position[0] -= count

    out = run_token_loop(row(0), feed, max_new_tokens=len(answer), on_token=lambda t, p: False, rewind=rewind,
                         drafter=drafter)
    assert out == answer
    return len(feeds)


def test_drafter_drafts_repetitive_answers_and_stops_on_random_ones():
    rng = np.random.default_rng(0)
    table = [int(t) for t in np.tile([10, 11, 12, 13, 14, 15], 60) + rng.integers(0, 2, 360) * 20]
    table_drafter = drafter()
    steps = replay(table, table_drafter)
    assert steps < 0.6 * len(table) and table_drafter.accepted_tokens > 0.4 * len(table)
    noise = [int(t) for t in rng.integers(0, 64, 600)]
    noise_drafter = Drafter(costs=FixedCosts(0.1))
    replay(noise, noise_drafter)
    # matches of one or two tokens in noise are checked a few times, found wanting, then only probed
    assert noise_drafter.draft_tokens < 0.12 * len(noise)


def test_drafter_gives_up_where_a_batch_costs_more_than_it_can_gain():
    costly = Drafter(costs=FixedCosts(2.0))  # a 2-token batch costs 3 plain steps: no draft can pay
    cycle = [1, 2, 3, 4] * 50
    replay(cycle, costly)
    assert costly.draft_tokens == 0


def test_measured_costs_replace_the_prior_and_extrapolate():
    costs = BatchCosts()
    assert costs.cost(3) == pytest.approx(1.5)  # the prior until single steps are timed
    for _ in range(3):
        costs.record(1, 0.1)
        costs.record(2, 0.3)
    assert costs.cost(2) == pytest.approx(3.0)
    assert costs.cost(5) == pytest.approx(9.0)  # linear from the largest measured smaller batch
    assert costs.known()
    drafter = Drafter(costs=costs)
    replay([1, 2, 3, 4] * 10 * EXPLORE_EVERY, drafter)
    assert drafter.draft_tokens == 0  # not even the periodic probe, since a sure 1-token draft loses


# -- the acceptance rule when sampling -----------------------------------------------------------------------

@pytest.mark.parametrize("drafted", [0, 2, 4])
def test_sampling_with_a_draft_keeps_the_models_distribution(drafted):
    logits = np.log(np.array([0.05, 0.3, 0.4, 0.05, 0.2]))
    rng = np.random.default_rng(11)
    n = 20000
    counts = np.bincount([verify_token(logits, drafted, temperature=0.8, top_p=0.95, rng=rng) for _ in range(n)],
                         minlength=5)
    want = distribution(logits, temperature=0.8, top_p=0.95)
    assert counts[3] == 0 or want[3] > 0  # outside the nucleus stays outside, drafted or not
    assert np.abs(counts / n - want).max() < 0.012
    assert verify_token(logits, 1) == pick_token(logits) == 2  # greedy: the argmax, whatever was drafted


# -- both decoders: plain decoding's tokens, answers of each kind --------------------------------------------

def corpus_answers(tokenizer) -> dict[str, list[list[int]]]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as lines:
        corpus = [json.loads(line) for line in lines]
    return {kind: [tokenizer.encode(a["answer"], add_special_tokens=False)[:ANSWER_TOKENS]
                   for a in corpus if a["kind"] == kind][:ANSWERS_PER_KIND] for kind in KINDS}


def steer(rows: np.ndarray, positions: Sequence[int], answer: Sequence[int]) -> np.ndarray:
    """Add 4 standard deviations of each row to the logit of the answer's token at the next position."""
    rows = np.array(rows, dtype=np.float32)
    for i, position in enumerate(positions):
        index = position + 1 - len(PROMPT)
        if 0 <= index < len(answer):
            rows[i, answer[index]] += 4.0 * rows[i].std()
    return rows


class SteeredTorch:
    """Our torch model, its logits steered towards `answer` (the torch decoder sees only this face)."""

    def __init__(self, model) -> None:
        self._model, self.config, self.model, self.lm_head = model, model.config, model.model, model.lm_head
        self.answer: list[int] = []

    def __call__(self, **kwargs):
        start = kwargs["cache"].get_seq_length()
        out = self._model(**kwargs)
        length = kwargs["input_ids"].shape[1]
        kept = out.logits.shape[1]
        positions = range(start + length - kept, start + length)
        out.logits = torch.from_numpy(steer(out.logits[0].float().numpy(), positions, self.answer))[None]
        return out


class SteeredLlama:
    """Steers the llama.cpp decoder's logits towards `answer` (for the duration of one test)."""

    def __init__(self, decoder, monkeypatch) -> None:
        self.answer: list[int] = []
        original = decoder._decode_tokens

        def decode(ids, position, want):
            rows = original(ids, position, want)
            return steer(rows, [position + i for i, wanted in enumerate(want) if wanted], self.answer)

        monkeypatch.setattr(decoder, "_decode_tokens", decode)


@pytest.fixture(scope="module")
def tokenizer(dots_tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dots_tiny)


@pytest.fixture(scope="module")
def tiny_decoders(dots_tiny, tmp_path_factory):
    """The golden checkpoint on both decoders (llama.cpp: its F32 GGUF, where batches add in the same order)."""
    made = {"torch": TorchDecoder(DotsOCRForCausalLM.from_pretrained(dots_tiny, dtype=torch.float32).eval(),
                                  "cpu", "fp32")}
    if _has_llamacpp():
        from dotocr.engine.decoders.llamacpp import load_llamacpp_decoder

        made["llamacpp"] = load_llamacpp_decoder(dots_tiny, llamacpp_plan("f32"), n_threads=1,
                                                 gguf_dir=tmp_path_factory.mktemp("gguf"))
    yield made
    for decoder in made.values():
        decoder.close()


def _has_llamacpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


DECODERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    not _has_llamacpp(), reason="llama-cpp-python is not installed (CI installs it)"))]


def greedy(decoder, prompt, max_new_tokens, drafter=None, eos=EOS) -> tuple[list[int], list[float]]:
    seen: list[tuple[int, float]] = []
    out = decoder.generate(DecodeRequest(list(prompt), None, None, 1000, max_new_tokens, eos_token_ids=eos,
                                         drafter=drafter), lambda t, p: seen.append((t, p)) and False)
    assert out == [t for t, _ in seen]
    return out, [p for _, p in seen]


@pytest.mark.parametrize("name", DECODERS)
def test_greedy_tokens_with_drafts_are_plain_decodings_for_answers_of_each_kind(name, tiny_decoders, tokenizer,
                                                                              monkeypatch):
    holder: SteeredTorch | SteeredLlama
    if name == "torch":
        holder = SteeredTorch(tiny_decoders["torch"].model)
        decoder = TorchDecoder(holder, "cpu", "fp32")
    else:
        decoder = tiny_decoders["llamacpp"]
        holder = SteeredLlama(decoder, monkeypatch)
    totals = {}
    for kind, answers in corpus_answers(tokenizer).items():
        assert len(answers) >= ANSWERS_PER_KIND
        drafted = accepted = followed = 0
        for answer in answers:
            holder.answer = answer
            plain, plain_p = greedy(decoder, PROMPT, len(answer), eos=())
            spec_drafter = drafter()
            fast, fast_p = greedy(decoder, PROMPT, len(answer), spec_drafter, eos=())
            assert fast == plain, kind
            np.testing.assert_allclose(fast_p, plain_p, rtol=1e-4, atol=1e-6)
            drafted += spec_drafter.draft_tokens
            accepted += spec_drafter.accepted_tokens
            followed += sum(a == b for a, b in zip(plain, answer, strict=True))
        totals[kind] = (drafted, accepted, followed / (len(answers) * ANSWER_TOKENS))
    for kind, (drafted, accepted, followed) in totals.items():
        assert 0.6 < followed < 1.0, (kind, followed)  # the model steers too: tokens depend on it and its cache
        assert 0 < accepted < drafted, (kind, drafted, accepted)  # drafts were both kept and rejected


@pytest.mark.parametrize("name", DECODERS)
def test_a_rejected_draft_leaves_no_trace_in_the_kv_cache(name, tiny_decoders, dots_tiny):
    """Every draft wrong: each is fed, rejected and removed, and the tokens are those of a fresh plain run; then
    the next request (with the image) is unaffected too."""
    from safetensors.torch import load_file

    decoder = tiny_decoders[name]
    plain, _ = greedy(decoder, PROMPT, 60, eos=())
    wrong = Guesser(lambda answer: [(answer[-1] + 1 + i) % 1000 for i in range(4)])
    assert greedy(decoder, PROMPT, 60, wrong, eos=())[0] == plain
    assert wrong.draft_tokens > 50 * 3 and wrong.accepted_tokens < wrong.draft_tokens // 4
    half = Guesser(lambda answer: plain[len(answer):len(answer) + 2] + [7, 7])  # two right, then wrong
    assert greedy(decoder, PROMPT, 60, half, eos=())[0] == plain
    assert half.accepted_tokens >= 2 * 15
    if name == "llamacpp":  # llama.cpp's memory holds exactly the prompt and the fed tokens
        llama = decoder._llama
        assert llama.llama_memory_seq_pos_max(llama.llama_get_memory(decoder._ctx), 0) <= len(PROMPT) + 60 - 1
    inputs, expected = load_file(dots_tiny / "inputs.safetensors"), load_file(dots_tiny / "expected.safetensors")
    request = DecodeRequest(inputs["input_ids"][0].tolist(), inputs["pixel_values"], inputs["image_grid_thw"], 1000,
                            8)
    assert decoder.generate(request, lambda t, p: False) == expected["greedy_tokens"].tolist()


# -- the golden fixture through every path we ship ---------------------------------------------------------

@pytest.mark.parametrize("path", ["torch", "f32", "f16", "q8_0"])
def test_the_golden_tokens_come_out_with_drafts_kept_and_drafts_rejected(path, dots_tiny, tmp_path_factory):
    from safetensors.torch import load_file

    if path == "torch":
        decoder = TorchDecoder(DotsOCRForCausalLM.from_pretrained(dots_tiny, dtype=torch.float32).eval(), "cpu",
                               "fp32")
    else:
        if not _has_llamacpp():
            pytest.skip("llama-cpp-python is not installed (CI installs it)")
        from dotocr.engine.decoders.llamacpp import load_llamacpp_decoder

        decoder = load_llamacpp_decoder(dots_tiny, llamacpp_plan(path), n_threads=1,
                                        gguf_dir=tmp_path_factory.mktemp("gguf"))
    inputs, expected = load_file(dots_tiny / "inputs.safetensors"), load_file(dots_tiny / "expected.safetensors")
    golden = expected["greedy_tokens"].tolist()
    request = DecodeRequest(inputs["input_ids"][0].tolist(), inputs["pixel_values"], inputs["image_grid_thw"], 1000,
                            len(golden))
    try:
        for guess in (lambda answer: golden[len(answer):], lambda answer: [(t + 3) % 900 for t in golden]):
            request.drafter = Guesser(guess)
            assert decoder.generate(request, lambda t, p: False) == golden
    finally:
        decoder.close()


# -- per-token probabilities ---------------------------------------------------------------------------------

def test_each_token_carries_its_probability_on_both_decoders(tmp_path, dots_tiny):
    """A scripted model sure of every step but one: the probabilities say so, on both decoders, drafted or not."""
    chain = {1007: 40, 40: 41, 41: 42, 42: 43, 43: 44, 44: 45, 45: 40}
    folder = save_scripted_checkpoint(tmp_path / "scripted", dots_tiny, chain, doubt={42: 300})
    decoders = [TorchDecoder(DotsOCRForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), "cpu", "fp32")]
    if _has_llamacpp():
        from dotocr.engine.decoders.llamacpp import load_llamacpp_decoder

        decoders.append(load_llamacpp_decoder(folder, llamacpp_plan("f32"), n_threads=1, gguf_dir=tmp_path))
    for decoder in decoders:
        for spec in (None, drafter()):
            tokens, probabilities = greedy(decoder, [1005, 40, 1006, 1007], 24, spec, eos=())
            assert tokens[:6] == [40, 41, 42, 43, 44, 45]
            doubted = [p for t, p in zip(tokens[1:], probabilities[1:], strict=True) if t == 43]
            assert doubted and all(0.5 < p < 0.7 for p in doubted), (decoder.name, doubted)
            assert all(p > 0.99 for t, p in zip(tokens, probabilities, strict=True) if t != 43)
            if spec is not None:
                assert spec.accepted_tokens > 8  # the cycle was drafted, and its unsure step verified
        decoder.close()


def test_the_engine_reports_drafts_and_probabilities_and_off_changes_no_token(tmp_path, dots_tiny):
    from PIL import Image

    from dotocr.config import Settings
    from dotocr.engine.inference import DotOCRInference

    folder = save_tiny_checkpoint(tmp_path / "seed3", dots_tiny, seed=3)
    image = Image.new("RGB", (160, 64), "white")
    results, runs = {}, {}
    for speculate in ("auto", "off"):
        engine = DotOCRInference(Settings(model=str(folder), device="cpu", precision="fp32", decoder="torch",
                                          speculate=speculate))
        generate = engine._generate
        engine._generate = lambda picture, call, generate=generate, speculate=speculate: runs.setdefault(
            speculate, generate(picture, call))
        results[speculate] = engine.ocr(image, prompt="layout-json", max_new_tokens=120)
        engine.unload()
    on, off = results["auto"], results["off"]
    assert on.raw == off.raw and on.generated_tokens == off.generated_tokens
    assert off.timings["draft_tokens"] == off.timings["accepted_tokens"] == 0
    assert on.timings["draft_tokens"] >= on.timings["accepted_tokens"] > 0
    for run in runs.values():  # the kept tokens, each with the probability the model gave it
        assert 0 < len(run.tokens) == len(run.token_probabilities)
        assert all(0.0 < p <= 1.0 for p in run.token_probabilities)
    np.testing.assert_allclose(runs["auto"].token_probabilities, runs["off"].token_probabilities, rtol=1e-4)


def test_auto_speculates_only_where_a_batch_cannot_change_a_token():
    """fp32 torch and an F32 GGUF on the CPU compute a batch's rows as single tokens bit for bit; the default Q8_0
    and bf16 paths do not (a near tie can flip), so `auto` leaves them alone and `on` is the person's choice."""
    from dotocr.engine.plan import speculates

    assert speculates("auto", "cpu", "torch", "fp32") and speculates("auto", "cpu", "llamacpp", "f32")
    for decoder, weights in (("torch", "bf16"), ("torch", "4bit"), ("llamacpp", "q8_0"), ("llamacpp", "f16")):
        assert not speculates("auto", "cpu", decoder, weights)
        assert speculates("on", "cpu", decoder, weights) and not speculates("off", "cpu", decoder, weights)
    assert not speculates("auto", "cuda", "torch", "fp32")  # not measured on a GPU
