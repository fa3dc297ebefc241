"""The one interface every decoder implements, so the engine's pipeline drives them all alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class DecodeRequest:
    prompt_ids: list[int]        # the whole prompt, one <|imgpad|> id per image token
    pixel_values: Any            # torch.FloatTensor from the image preparer (patches)
    grid_thw: Any                # torch.LongTensor [[t, h, w]]
    image_token_id: int
    max_new_tokens: int
    temperature: float = 0.0     # 0 = greedy
    top_p: float = 1.0
    eos_token_ids: tuple[int, ...] = ()


OnToken = Callable[[int], bool]  # the engine's per-token pipeline (loop guard, streaming, eos, clock); True = stop now


class Decoder(Protocol):
    name: str        # "torch" | "llamacpp"
    device: str      # "cpu" | "cuda"
    precision: str   # what really runs, e.g. "bf16", "fp32", "q8_0", "q4_k_m", "f16", "f32"

    def generate(self, request: DecodeRequest, on_token: OnToken) -> list[int]: ...  # new tokens, eos included

    def close(self) -> None: ...
