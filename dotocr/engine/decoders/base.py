"""What a decoder is: the part that turns a prompt and an image into tokens, one at a time.

The engine owns everything around it (prompt, sizing, loop guard, streaming, stop reasons, timings); a
decoder only picks tokens and hands each one, with the probability the model gave it, to `on_token`, stopping
when that answers True, at end-of-text, or at `max_new_tokens`. Two exist: torch (our PyTorch model) and
llama.cpp (our PyTorch vision tower, the text decoder in llama.cpp). Both run the shared token loop
(`sampling.run_token_loop`), which verifies the request's drafts when it carries a `Drafter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .speculation import BatchCosts, Drafter

OnToken = Callable[[int, float], bool]
"""The engine's per-token pipeline (`generation.TokenPipeline`): each token and the probability the model gave
it (softmax of that step's logits); True means stop now."""


@dataclass
class DecodeRequest:
    prompt_ids: list[int]
    """The whole prompt, one <|imgpad|> id per image token."""
    pixel_values: Any
    """torch.FloatTensor of patches, from the image preparer."""
    grid_thw: Any
    """torch.LongTensor [[t, h, w]]."""
    image_token_id: int
    max_new_tokens: int
    temperature: float = 0.0
    """0 means greedy."""
    top_p: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    drafter: Drafter | None = None
    """Speculative decoding: guesses to verify in batches (the tokens stay exactly the model's); None: off."""


class Decoder(Protocol):
    name: str
    """"torch" or "llamacpp"."""
    device: str
    """"cpu" or "cuda"."""
    precision: str
    """What really runs: "bf16", "fp16", "fp32", "4bit", or a GGUF type such as "q8_0"."""
    max_positions: int
    """The model's context: prompt plus new tokens never go past it (the engine caps max_new_tokens)."""
    batch_costs: BatchCosts
    """What verifying n tokens at once costs here against one token, timed across requests (speculation)."""

    def generate(self, request: DecodeRequest, on_token: OnToken) -> list[int]:
        """The new tokens (end-of-text included when produced)."""
        ...

    def close(self) -> None:
        """Give the decoder's memory back."""
        ...
