"""The decode thread count: the tuner's choices from token times, and llama.cpp really following them.

The policy tests feed the tuner token times as a machine would produce them (idle: the full count faster;
busy: half of it faster); the decoder test runs the real llama.cpp decoder on the golden fixture while the
tuner switches, and checks that llama.cpp's context took each count and that the tokens did not change.
"""

from __future__ import annotations

import pytest

from dotocr.engine.decoders import thread_tuner
from dotocr.engine.decoders.thread_tuner import PROBE_TOKENS, REPROBE_AFTER_S, ThreadTuner
from dotocr.engine.llamacpp_runtime import llamacpp_installed


def decode(tuner: ThreadTuner, seconds_per_token: dict[int, float], tokens: int) -> list[int]:
    """Decode `tokens` tokens at the times given per thread count; the counts used, in order."""
    used = []
    for _ in range(tokens):
        threads = tuner.threads()
        used.append(threads)
        tuner.record(threads, seconds_per_token[threads])
    return used


def test_a_short_request_on_an_idle_machine_never_probes():
    tuner = ThreadTuner(2)
    steady = int(REPROBE_AFTER_S / 0.1) - 1  # just under REPROBE_AFTER_S of decoding
    assert decode(tuner, {2: 0.10, 1: 0.17}, steady) == [2] * steady


def test_an_idle_machine_measures_rarely_and_keeps_every_thread():
    tuner = ThreadTuner(2)
    used = decode(tuner, {2: 0.10, 1: 0.17}, 400)  # 40 s of decoding
    assert used.count(1) == PROBE_TOKENS * (used.count(2) * 0.1 // REPROBE_AFTER_S)  # one probe per 8 s
    assert used.count(1) <= 0.02 * len(used) and used[-1] == 2 and tuner.best == 2


def test_a_core_taken_midway_moves_to_half_the_threads_at_once_and_back_when_it_quiets():
    tuner = ThreadTuner(8)
    assert tuner.candidates == [8, 4]
    assert decode(tuner, {8: 0.1, 4: 0.18}, 20) == [8] * 20
    busy = decode(tuner, {8: 0.4, 4: 0.3}, 20)  # another program takes a core
    first_half = busy.index(4)
    assert first_half <= 2 + PROBE_TOKENS and set(busy[first_half:]) == {4} and tuner.best == 4
    # quiet again: within REPROBE_AFTER_S of decoding the tuner measures and returns to every thread
    idle = decode(tuner, {8: 0.1, 4: 0.18}, int(REPROBE_AFTER_S / 0.18) + 2 * PROBE_TOKENS + 5)
    assert idle[0] == 4 and idle[-1] == 8 and tuner.best == 8


def test_a_machine_busy_from_the_start_is_caught_within_the_reprobe_time():
    tuner = ThreadTuner(2)
    used = decode(tuner, {2: 0.9, 1: 0.3}, 40)  # steady, but slow: no slowdown to see
    switched = used.index(1)
    assert switched * 0.9 <= REPROBE_AFTER_S + 2 * 0.9 and used[-1] == 1 and tuner.best == 1


def test_a_hopeless_candidate_costs_one_token():
    tuner = ThreadTuner(2)
    used = decode(tuner, {2: 0.1, 1: 0.5}, 200)
    start = used.index(1)
    assert used[start:start + 2] == [1, 2]  # one token at 5x, dropped


def test_one_thread_never_probes_nor_a_fixed_count():
    assert decode(ThreadTuner(1), {1: 0.2}, 100) == [1] * 100
    assert decode(ThreadTuner(4, adaptive=False), {4: 0.9, 2: 0.1}, 100) == [4] * 100


@pytest.mark.skipif(not llamacpp_installed(), reason="needs llama-cpp-python 0.3.36 (pip install "
                    "'dotocr[llamacpp]'); CI installs it")
def test_llama_cpp_follows_the_tuner_and_the_tokens_do_not_change(dots_tiny, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from dotocr.engine.decoders.base import DecodeRequest
    from dotocr.engine.decoders.llamacpp import load_llamacpp_decoder
    from tests.tiny_models import llamacpp_plan

    inputs = load_file(dots_tiny / "inputs.safetensors")
    request = DecodeRequest(prompt_ids=inputs["input_ids"][0].tolist(), pixel_values=inputs["pixel_values"],
                            grid_thw=inputs["image_grid_thw"], image_token_id=1000, max_new_tokens=40,
                            eos_token_ids=[])
    with load_llamacpp_decoder(dots_tiny, llamacpp_plan("f32"), n_threads=1,
                               gguf_dir=tmp_path) as fixed:
        expected = fixed.generate(request, lambda token, probability: False)
    monkeypatch.setattr(thread_tuner, "REPROBE_AFTER_S", 0.0)  # measure again after every token
    with load_llamacpp_decoder(dots_tiny, llamacpp_plan("f32"), n_threads=2,
                               gguf_dir=tmp_path) as tuned:
        llama, seen = tuned._llama, []
        wanted = []
        original = tuned._decode_tokens

        def watch(ids, position, want):
            wanted.append(tuned._tuner.threads())
            seen.append(llama.llama_n_threads(tuned._ctx))
            return original(ids, position, want)

        monkeypatch.setattr(tuned, "_decode_tokens", watch)
        assert tuned.generate(request, lambda token, probability: False) == expected
    decode_steps = slice(-(len(expected) - 1), None)  # the prompt's batches come first
    assert seen[decode_steps] == wanted[decode_steps]
    assert set(seen[decode_steps]) == {1, 2}  # llama.cpp really decoded at both counts
