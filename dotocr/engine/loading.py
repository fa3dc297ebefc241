"""Loading one checkpoint folder as the plan says: the decoder, the tokenizer, the image preparer, the stop ids.

Never runs checkpoint code. Which decoder, device, precision and dtype come from `plan.LoadPlan`; this module
only carries them out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailableError
from .model.spellings import STOP_TOKENS, VISION_PREFIX
from .plan import LoadPlan, PrecisionError

log = logging.getLogger("dotocr.engine")

# Kept in 16 bits under 4-bit loading (measured in docs/performance.md): lm_head picks every token, and 4-bit
# flips its choice where the model hesitates between look-alike characters, for 330 MiB a 6 GiB card can spare;
# the merger adds the most error of any layer (13 % vs 9 %) and feeds every image token into the decoder, for
# 67 MiB. The patch conv is a Conv2d, which bitsandbytes does not quantise.
UNQUANTIZED_MODULES = ("lm_head", VISION_PREFIX + "merger")
BNB_CPU_BLOCK = 64  # bitsandbytes' CPU 4-bit kernel needs input widths in multiples of its block size


@dataclass
class LoadedModel:
    decoder: Any
    """A `decoders.base.Decoder`: what picks the tokens."""
    tokenizer: Any
    preparer: Any
    eos_token_ids: list[int]
    image_token_id: int
    folder: Path
    device: str
    precision: str
    memory: GpuMemory | None = None
    """Peak-memory bookkeeping on CUDA; None on the CPU."""
    gguf_type: str | None = None
    """With the llama.cpp decoder: its GGUF weight type."""


class GpuMemory:
    """Peak CUDA memory of one OCR call, for `OCRResult.peak_gpu_mb`."""

    def reset(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def load_checkpoint(folder: Path, plan: LoadPlan,
                    on_progress: Callable[[float], None] | None = None) -> LoadedModel:
    """Decoder, tokenizer, image preparer and stop ids from one checkpoint folder. Never runs checkpoint code.

    `on_progress` hears about a one-off GGUF conversion (llama.cpp decoder), which can take minutes.
    """
    import torch
    from transformers import AutoTokenizer, BitsAndBytesConfig, GenerationConfig
    from transformers.utils import logging as transformers_logging

    from .inputs.preprocessing import ImagePreparer
    from .model.configuration_dots import DotsOCRConfig
    from .model.modeling_dots_ocr import DotsOCRForCausalLM

    try:
        config = DotsOCRConfig.from_pretrained(folder)
    except Exception as exc:
        raise ModelUnavailableError(f"The checkpoint in {folder} has an unreadable config.json ({exc}).") from None
    transformers_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar; downloads keep theirs
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        preparer = ImagePreparer.from_pretrained(folder)
    except OSError as exc:
        raise ModelUnavailableError(f"The checkpoint in {folder} is incomplete ({exc}).") from None
    eos = _eos_ids(folder, tokenizer)
    memory = GpuMemory() if plan.device == "cuda" else None
    if plan.decoder == "llamacpp":
        from .decoders.llamacpp import load_llamacpp_decoder

        decoder = load_llamacpp_decoder(folder, plan, on_progress=on_progress)
        return LoadedModel(decoder=decoder, tokenizer=tokenizer, preparer=preparer, eos_token_ids=eos,
                           image_token_id=config.image_token_id, folder=folder, device=plan.device,
                           precision=plan.precision, memory=memory, gguf_type=plan.gguf_type)
    from .decoders.torch_decoder import TorchDecoder
    dtype = getattr(torch, plan.torch_dtype)
    kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "device_map": {"": plan.device}}
    if plan.precision == "4bit":
        _require_bitsandbytes()
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float16,
            llm_int8_skip_modules=list(UNQUANTIZED_MODULES) + _unquantizable(config, plan.device))
    try:
        model = DotsOCRForCausalLM.from_pretrained(folder, **kwargs).eval()
    except torch.cuda.OutOfMemoryError:
        raise
    except OSError as exc:
        raise ModelUnavailableError(f"The checkpoint in {folder} is incomplete ({exc}).") from None
    # Only the stop ids come from the checkpoint's generation_config; its max_length (32768) would just fight
    # max_new_tokens, which the engine sets per call.
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[0], do_sample=False)
    if plan.vision_precision == "int8":
        from .model.vision_tower import int8_vision_tower

        model.vision_tower = int8_vision_tower(model.vision_tower)
    return LoadedModel(decoder=TorchDecoder(model, plan.device, plan.precision), tokenizer=tokenizer,
                       preparer=preparer, eos_token_ids=eos, image_token_id=config.image_token_id, folder=folder,
                       device=plan.device, precision=plan.precision, memory=memory)


def _eos_ids(folder: Path, tokenizer) -> list[int]:
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
    except OSError:
        eos = None
    if eos is None:
        eos = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS]
    return [eos] if isinstance(eos, int) else list(eos)


def _unquantizable(config, device: str) -> list[str]:
    """Linear layers whose input width the CPU 4-bit kernel cannot take (never the case at the real sizes)."""
    if device != "cpu":
        return []
    import torch

    from .model.modeling_dots_ocr import DotsOCRForCausalLM

    with torch.device("meta"):
        skeleton = DotsOCRForCausalLM(config)
    return [name for name, module in skeleton.named_modules()
            if isinstance(module, torch.nn.Linear) and module.in_features % BNB_CPU_BLOCK]


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise PrecisionError("4-bit needs the bitsandbytes package: pip install \"bitsandbytes>=0.46\".") from None
