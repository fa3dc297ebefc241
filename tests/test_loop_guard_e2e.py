"""Tiny random checkpoints that really loop, read through the real CLI: the guard stops them early.

The seeds were found by running the tiny model of `tiny_models.save_tiny_checkpoint` greedily on
`text_image` for 300 tokens (torch decoder, dots.ocr's own sizing), then pinned for the way each one loops:

* 10: one token again and again, from the second token on (the short rule).
* 42: a two-token alternation (the short rule).
* 257: a tail wandering between short patterns with no exact period (only the wandering rule sees it).

Without the guard each writes all 300 tokens. The seeds were found on the torch decoder, so the test pins it:
at a near-tie the llama.cpp decoder (F32, 3e-7 from torch) may take the other token and loop another way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cli_helpers import REPO, text_image
from tiny_models import save_tiny_checkpoint

pytestmark = pytest.mark.timeout(300)

SEEDS = (10, 42, 257)


def test_looping_models_stop_with_repetition_through_the_cli(tmp_path, dots_tiny):
    image = text_image(tmp_path / "shot.png", (300, 120))
    # one torch thread each: three children share the machine, extra threads would only fight
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    children = {}
    for seed in SEEDS:  # one process per model, all at once
        folder = save_tiny_checkpoint(tmp_path / f"seed-{seed}", dots_tiny, seed=seed)
        children[seed] = subprocess.Popen(
            [sys.executable, "-m", "dotocr", "ocr", str(image), "--format", "json", "--local", "--model",
             str(folder), "--device", "cpu", "--precision", "fp32", "--decoder", "torch",
             "--max-new-tokens", "300"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    for seed, child in children.items():
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err.decode()
        result = json.loads(out)
        assert result["stop_reason"] == "repetition", (seed, result)
        assert result["generated_tokens"] < 110, (seed, result["generated_tokens"])
        loop_start = result["loop_start"]
        assert isinstance(loop_start, int) and 0 <= loop_start < result["generated_tokens"] - 50
        # the text keeps what came before the loop and one copy of its block; raw keeps everything
        assert len(result["text"]) < len(result["raw"])
        assert result["raw"].strip().startswith(result["text"][:20])
