"""The two decoders through the real CLI: the same JSON keys and stop reasons, and with an F32 GGUF and greedy
decoding the same text, on the golden checkpoint and on tiny random ones (one of them a model that loops)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from cli_helpers import REPO, text_image
from tiny_models import save_tiny_checkpoint

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (CI installs it)")]


def read(image, folder, decoder: str, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dotocr", "ocr", str(image), "--format", "json", "--local", "--model", str(folder),
         "--device", "cpu", "--precision", "fp32", "--decoder", decoder, *extra],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, cwd=REPO, timeout=240)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("model", ["golden", "seed-3", "seed-10"])
def test_torch_and_llamacpp_give_the_same_answer(tmp_path, dots_tiny, model):
    folder = dots_tiny if model == "golden" else save_tiny_checkpoint(
        tmp_path / model, dots_tiny, seed=int(model.split("-")[1]))
    image = text_image(tmp_path / "shot.png", (300, 120))
    torch_result = read(image, folder, "torch", "--max-new-tokens", "120")
    llama_result = read(image, folder, "llamacpp", "--max-new-tokens", "120")
    assert torch_result["decoder"] == "torch" and torch_result["gguf_type"] is None
    assert llama_result["decoder"] == "llamacpp" and llama_result["gguf_type"] == "f32"
    assert set(torch_result) == set(llama_result)
    same = ("text", "raw", "stop_reason", "generated_tokens", "loop_start", "image_tokens", "prompt_tokens")
    assert {k: llama_result[k] for k in same} == {k: torch_result[k] for k in same}
    if model == "seed-10":  # a model that writes one token forever: both stop it the same way
        assert torch_result["stop_reason"] == "repetition"
