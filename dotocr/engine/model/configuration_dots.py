"""Configuration of the dots.ocr model, mirroring the official checkpoint's `config.json`.

The official file is written for transformers 4.51 with an `auto_map` pointing at remote code. These classes read
it as it is (extra keys such as `auto_map` are kept and ignored), so `from_pretrained` never needs that code.
Defaults are the released model's: a Qwen2 1.5B-class decoder and a 42-layer vision tower.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, Qwen2Config

from dotocr.vision_grid import MERGE_SIZE, PATCH_SIZE


@strict
class DotsVisionConfig(PreTrainedConfig):
    """The vision tower. Field names are the official ones, so the checkpoint's `vision_config` maps 1:1."""

    model_type = "dots_vit"
    base_config_key = "vision_config"

    embed_dim: int = 1536
    hidden_size: int = 1536
    """Width of the merger's output, i.e. the language model's hidden size."""
    intermediate_size: int = 4224
    num_hidden_layers: int = 42
    num_attention_heads: int = 12
    num_channels: int = 3
    patch_size: int = PATCH_SIZE
    spatial_merge_size: int = MERGE_SIZE
    temporal_patch_size: int = 1
    rms_norm_eps: float = 1e-5
    use_bias: bool = False
    post_norm: bool = True
    initializer_range: float = 0.02
    init_merger_std: float = 0.02
    is_causal: bool = False


@strict
class DotsOCRConfig(Qwen2Config):
    """A Qwen2 text config plus the image/video placeholder ids and the vision tower's config."""

    model_type = "dots_ocr"
    sub_configs_defaults = {"vision_config": DotsVisionConfig}

    vocab_size: int = 151936
    hidden_size: int = 1536
    intermediate_size: int = 8960
    num_hidden_layers: int = 28
    num_attention_heads: int = 12
    num_key_value_heads: int | None = 2
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    image_token_id: int = 151665
    video_token_id: int = 151656
    vision_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        # The official config names flash-attention for the vision tower; our tower chooses its own kernel.
        if isinstance(self.vision_config, dict):
            self.vision_config = {k: v for k, v in self.vision_config.items() if k != "attn_implementation"}
        kwargs.setdefault("rope_theta", 1000000.0)
        super().__post_init__(**kwargs)


__all__ = ["DotsOCRConfig", "DotsVisionConfig"]
