"""The torch decoder: our PyTorch dots.ocr model, run step by step on a KV cache by the shared token loop.

One forward over the prompt (the image included) fills a `DynamicCache` and gives the first logits; then each
feed is one forward over the new tokens, asking the lm_head for those positions only (`logits_to_keep`), as
transformers' `generate()` does for one token. A verified draft is fed the same way, all its tokens in one
forward, and the rejected tail is cropped off the cache. The loop itself (picking, verification, probabilities,
stopping) is `sampling.run_token_loop`, shared with the llama.cpp decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from ..model.vector_linear import use_vector_linear
from .base import DecodeRequest, OnToken
from .sampling import run_token_loop
from .speculation import BatchCosts


class TorchDecoder:
    """Holds the loaded model; one generation at a time (the engine's lock sees to that)."""

    name = "torch"

    def __init__(self, model: Any, device: str, precision: str) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.max_positions = int(model.config.max_position_embeddings)
        self.batch_costs = BatchCosts()
        if device == "cpu":  # the decode step's matrix-vector kernel: see vector_linear.py
            use_vector_linear(model.model)
            use_vector_linear(model.lm_head)

    def generate(self, request: DecodeRequest, on_token: OnToken, *, rng: np.random.Generator | None = None
                 ) -> list[int]:
        """New tokens after the prompt, eos included if produced; `on_token` sees each as soon as it is picked."""
        if request.max_new_tokens <= 0:
            return []
        model, device = self.model, self.device
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            ids = torch.tensor([request.prompt_ids], device=device)
            pixels = request.pixel_values.to(device) if request.pixel_values is not None else None
            grid = request.grid_thw.to(device) if request.grid_thw is not None else None
            out = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, cache=cache, use_cache=True,
                        logits_to_keep=1)
            first = _rows(out.logits)[-1]

            def feed(tokens: Sequence[int]) -> np.ndarray:
                step = torch.tensor([list(tokens)], device=device)
                return _rows(model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=len(tokens)).logits)

            def rewind(count: int) -> None:
                cache.crop(-count)

            return run_token_loop(first, feed, max_new_tokens=request.max_new_tokens, on_token=on_token,
                                  eos_token_ids=request.eos_token_ids, temperature=request.temperature,
                                  top_p=request.top_p, rng=rng, rewind=rewind, drafter=request.drafter)

    def close(self) -> None:
        self.model = None


def _rows(logits: torch.Tensor) -> np.ndarray:
    """(positions, vocab) float32 logits on the host: what the token loop picks from."""
    return logits[0].float().cpu().numpy()
