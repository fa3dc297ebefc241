"""The dots.ocr architecture, written natively so no checkpoint code ever runs.

    pixels -> [vision tower] -> one embedding per 2x2 patch window -> replaces the <|imgpad|> token embeddings
           -> [Qwen2 decoder] -> next-token logits

Vision tower: Conv2d patch embedding + RMSNorm; 2D rotary positions (height half, width half) enumerated in
2x2 merge-window order, the order `Qwen2VLImageProcessor` emits patches in; blocks of
RMSNorm -> attention (fused qkv) -> residual -> RMSNorm -> SwiGLU -> residual; a final RMSNorm; and a merger
(LayerNorm -> Linear -> GELU -> Linear) that folds each 2x2 window into one language-model token.

Two choices differ from the official remote code, deliberately, without changing the numbers:
- Attention runs image by image through `scaled_dot_product_attention` on 4-D tensors, so memory grows linearly
  with the patch count; the official fallback builds a dense mask and score matrix over all patches of all images.
- Inputs are cast to the weights' dtype instead of a hard-coded bfloat16, so fp32, fp16, bf16 and 4-bit all run.
Parameter names are the official ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2ForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_dots import DotsOCRConfig, DotsVisionConfig
from .spellings import WEIGHT_ALIASES

VISION_ROPE_THETA = 10000.0



class DotsRMSNorm(nn.Module):
    """RMSNorm computed in float32, then cast back: the official vision tower's normalisation."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class DotsPatchEmbed(nn.Module):
    """14x14 pixel patches -> embed_dim, then RMSNorm."""

    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.temporal_patch_size = config.temporal_patch_size
        self.embed_dim = config.embed_dim
        size = (config.patch_size, config.patch_size)
        self.proj = nn.Conv2d(config.num_channels, config.embed_dim, kernel_size=size, stride=size)
        self.norm = DotsRMSNorm(config.embed_dim, eps=config.rms_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.view(-1, self.num_channels, self.temporal_patch_size, self.patch_size, self.patch_size)
        x = self.proj(x[:, :, 0]).view(-1, self.embed_dim)
        return self.norm(x)


class DotsViTPreprocessor(nn.Module):
    """Holds the patch embedding under the official name `patch_embed.patchifier`."""

    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.patchifier = DotsPatchEmbed(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.patchifier(pixel_values)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_vision_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x: (seq, heads, head_dim); freqs: (seq, head_dim / 2). Rotation in float32, as upstream."""
    cos = freqs.cos().repeat(1, 2).unsqueeze(1)
    sin = freqs.sin().repeat(1, 2).unsqueeze(1)
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


class DotsVisionAttention(nn.Module):
    """Bidirectional attention within each image. Memory is linear in the patch count: no S x S tensor is built."""

    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.embed_dim // config.num_attention_heads
        self.qkv = nn.Linear(config.embed_dim, config.embed_dim * 3, bias=config.use_bias)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim, bias=config.use_bias)

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: list[int], rotary: torch.Tensor) -> torch.Tensor:
        seq = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).view(seq, 3, self.num_heads, self.head_dim).unbind(1)
        q = apply_vision_rotary(q, rotary)
        k = apply_vision_rotary(k, rotary)
        out = torch.empty_like(q)
        for start, end in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):
            # 4-D (batch, heads, seq, dim): the layout for which torch picks a memory-efficient kernel.
            qi, ki, vi = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            oi = F.scaled_dot_product_attention(qi, ki, vi)
            out[start:end] = oi.squeeze(0).transpose(0, 1)
        return self.proj(out.reshape(seq, -1))


class DotsSwiGLUFFN(nn.Module):
    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.intermediate_size, bias=config.use_bias)
        self.fc3 = nn.Linear(config.embed_dim, config.intermediate_size, bias=config.use_bias)
        self.fc2 = nn.Linear(config.intermediate_size, config.embed_dim, bias=config.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


class DotsVisionBlock(nn.Module):
    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.norm1 = DotsRMSNorm(config.embed_dim, eps=config.rms_norm_eps)
        self.attn = DotsVisionAttention(config)
        self.norm2 = DotsRMSNorm(config.embed_dim, eps=config.rms_norm_eps)
        self.mlp = DotsSwiGLUFFN(config)

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: list[int], rotary: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states), cu_seqlens, rotary)
        return hidden_states + self.mlp(self.norm2(hidden_states))


class DotsPatchMerger(nn.Module):
    """Folds each 2x2 window of patch embeddings into one token of the language model's width."""

    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.window_dim = config.embed_dim * config.spatial_merge_size**2
        self.ln_q = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(self.window_dim, self.window_dim),
            nn.GELU(),
            nn.Linear(self.window_dim, config.hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.window_dim))


class DotsVisionTransformer(nn.Module):
    """Called as `vision_tower(pixel_values, grid_thw)`; returns one row per merged (2x2) token."""

    def __init__(self, config: DotsVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.spatial_merge_size = config.spatial_merge_size
        self.rotary_dim = config.embed_dim // config.num_attention_heads // 2
        self.patch_embed = DotsViTPreprocessor(config)
        self.blocks = nn.ModuleList([DotsVisionBlock(config) for _ in range(config.num_hidden_layers)])
        if config.post_norm:
            self.post_trunk_norm = DotsRMSNorm(config.embed_dim, eps=config.rms_norm_eps)
        self.merger = DotsPatchMerger(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.patchifier.proj.weight.dtype

    def rotary_embedding(self, grid_thw: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(patches, head_dim / 2) angles: height positions, then width positions, in 2x2 window order.

        The inverse frequencies are computed here rather than stored: a buffer made in __init__ would be
        garbage after transformers builds the model on the meta device.
        """
        m = self.spatial_merge_size
        inv_freq = 1.0 / (VISION_ROPE_THETA ** (torch.arange(0, self.rotary_dim, 2, device=device).float()
                                                / self.rotary_dim))
        positions = []
        for t, h, w in grid_thw.tolist():
            hpos = torch.arange(h, device=device).unsqueeze(1).expand(h, w)
            wpos = torch.arange(w, device=device).unsqueeze(0).expand(h, w)
            hpos = hpos.reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).flatten()
            wpos = wpos.reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).flatten()
            positions.append(torch.stack([hpos, wpos], dim=-1).repeat(t, 1))
        pos = torch.cat(positions).float()
        freqs = pos.unsqueeze(-1) * inv_freq  # (patches, 2, rotary_dim / 2)
        return freqs.flatten(1)

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        hidden_states = self.patch_embed(pixel_values.to(self.dtype))
        rotary = self.rotary_embedding(grid_thw, hidden_states.device)
        lengths = (grid_thw[:, 1] * grid_thw[:, 2]).repeat_interleave(grid_thw[:, 0])
        cu_seqlens = [0, *torch.cumsum(lengths, 0).tolist()]
        if cu_seqlens[-1] != hidden_states.shape[0]:
            raise ValueError(
                f"grid_thw describes {cu_seqlens[-1]} patches but pixel_values holds {hidden_states.shape[0]}."
            )
        for block in self.blocks:
            hidden_states = block(hidden_states, cu_seqlens, rotary)
        if self.config.post_norm:
            hidden_states = self.post_trunk_norm(hidden_states)
        return self.merger(hidden_states)


class DotsOCRForCausalLM(Qwen2ForCausalLM):
    """Qwen2 causal LM whose image placeholder tokens are replaced by the vision tower's embeddings."""

    config_class = DotsOCRConfig
    config: DotsOCRConfig
    _no_split_modules = ["Qwen2DecoderLayer", "DotsVisionBlock"]
    _can_compile_fullgraph = False  # the vision tower loops over images

    def __init__(self, config: DotsOCRConfig) -> None:
        super().__init__(config)
        self.vision_tower = DotsVisionTransformer(config.vision_config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        kwargs.setdefault("key_mapping", WEIGHT_ALIASES)
        kwargs["trust_remote_code"] = False
        return super().from_pretrained(*args, **kwargs)

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        """Token embeddings with the vision tower's output scattered over the image placeholder positions."""
        inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            return inputs_embeds
        if image_grid_thw is None:
            raise ValueError("pixel_values were given without image_grid_thw.")
        image_embeds = self.vision_tower(pixel_values, image_grid_thw)
        mask = input_ids == self.config.image_token_id
        n_tokens = int(mask.sum())
        if n_tokens != image_embeds.shape[0]:
            raise ValueError(
                f"The prompt holds {n_tokens} image tokens (id {self.config.image_token_id}) but the images "
                f"produce {image_embeds.shape[0]} embeddings; the prompt must carry one <|imgpad|> per merged patch."
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_embeds.to(inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if inputs_embeds is None and input_ids is not None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_grid_thw)
        return super().forward(
            input_ids=None, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep,
            **kwargs)

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and inputs.get("cache") is not None:
            # The image is already in the KV cache: later steps see only the new token.
            inputs.pop("pixel_values", None)
            inputs.pop("image_grid_thw", None)
        return inputs


def _register() -> None:
    """Make `AutoConfig` / `AutoModelForCausalLM.from_pretrained(folder)` return our classes for `dots_ocr`,
    so a checkpoint's `auto_map` (remote code) is never consulted. Runs once, when this module is imported."""
    from transformers import AutoConfig, AutoModelForCausalLM

    AutoConfig.register(DotsOCRConfig.model_type, DotsOCRConfig, exist_ok=True)
    AutoConfig.register(DotsVisionConfig.model_type, DotsVisionConfig, exist_ok=True)
    AutoModelForCausalLM.register(DotsOCRConfig, DotsOCRForCausalLM, exist_ok=True)


_register()

__all__ = ["DotsOCRForCausalLM", "DotsVisionTransformer"]
