"""Small random dots.ocr checkpoints for tests, built offline (widths are multiples of 64 so 4-bit runs on CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "preprocessor_config.json", "generation_config.json")


def tiny_config(**overrides) -> DotsOCRConfig:
    vision = dict(embed_dim=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, rms_norm_eps=1e-5)
    vision.update(overrides.pop("vision", {}))
    params = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  image_token_id=1000, video_token_id=991, vision_config=vision)
    params.update(overrides)
    return DotsOCRConfig(**params)


def tiny_model(seed: int = 0, **overrides) -> DotsOCRForCausalLM:
    torch.manual_seed(seed)
    return DotsOCRForCausalLM(tiny_config(**overrides)).eval()


def save_tiny_checkpoint(folder: Path, tokenizer_source: Path, seed: int = 0, **overrides) -> Path:
    """A complete checkpoint folder: random weights plus the golden fixture's tokenizer and configs."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(seed, **overrides).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, folder / name)
    return folder
