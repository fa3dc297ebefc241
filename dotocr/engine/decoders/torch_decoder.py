"""The torch decoder: transformers' `generate()` on our PyTorch dots.ocr model.

`generate` calls its stopping criteria once per step with the whole sequence so far; the adapter below hands
the newest token to the engine's pipeline, which decides whether to stop (loop guard, end-of-text, caller
cancelled). One small device-to-host copy per step, as any stopping criterion costs.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..model.vector_linear import use_vector_linear
from .base import DecodeRequest, OnToken

MIN_SAMPLING_TEMPERATURE = 1e-3
"""Below this, sampling is greedy decoding in all but name, and dividing the logits by it overflows."""


class _PerToken(StoppingCriteria):
    def __init__(self, prompt_length: int, on_token: OnToken) -> None:
        self.prompt_length = prompt_length
        self.on_token = on_token
        self._seen = prompt_length
        self._stop: torch.Tensor | None = None
        self._go: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        if self._go is None or self._go.device != input_ids.device:
            self._go = torch.zeros(1, dtype=torch.bool, device=input_ids.device)
            self._stop = torch.ones(1, dtype=torch.bool, device=input_ids.device)
        stop = False
        length = input_ids.shape[1]
        if length > self._seen:
            for token in input_ids[0, self._seen:].tolist():
                stop = self.on_token(int(token)) or stop
            self._seen = length
        return self._stop if stop else self._go  # type: ignore[return-value]


class TorchDecoder:
    """Holds the loaded model; one generation at a time (the engine's lock sees to that)."""

    name = "torch"

    def __init__(self, model: Any, device: str, precision: str) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.max_positions = int(model.config.max_position_embeddings)
        if device == "cpu":  # the decode step's matrix-vector kernel: see vector_linear.py
            use_vector_linear(model.model)
            use_vector_linear(model.lm_head)

    def generate(self, request: DecodeRequest, on_token: OnToken) -> list[int]:
        device = self.device
        input_ids = torch.tensor([request.prompt_ids], device=device)
        sampling: dict[str, Any] = {"do_sample": False}
        if request.temperature >= MIN_SAMPLING_TEMPERATURE:
            sampling = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p}
        with torch.inference_mode():
            output = self.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids),
                pixel_values=request.pixel_values.to(device), image_grid_thw=request.grid_thw.to(device),
                max_new_tokens=request.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([_PerToken(len(request.prompt_ids), on_token)]),
                **sampling)
        return output[0, len(request.prompt_ids):].tolist()

    def close(self) -> None:
        self.model = None
