"""The vision tower of a dots.ocr checkpoint as llama.cpp's `dots_ocr` mmproj GGUF.

Our own engine never needs this file: it runs the vision tower on PyTorch and feeds llama.cpp embeddings. The
mmproj is for llama.cpp's own multimodal path (`llama-server -m text.gguf --mmproj mmproj.gguf`, Ollama, the
peer benchmark): `dotocr convert-gguf` writes it beside the decoder's GGUF (`convert.py`).

llama.cpp's dots_ocr graph is its generic ViT (RMS norms, 2-D rotary positions, a SiLU-gated MLP, a fused qkv
projection) with the patch merger and projector after it, so every checkpoint tensor maps onto one llama.cpp
tensor unchanged: convolution kernels and Linear weights keep their (out, in, ...) layout, which GGUF stores
reversed, as llama.cpp reads it. The names are in the two tables below and nowhere else.

Types: F32 (for parity tests), BF16 and F16 for the matrices (norms and biases stay F32). One tensor's type
changes what ggml computes: its conv_2d unfolds the image (im2col) in F32 only when the kernel is BF16; with an
F32 or F16 kernel it unfolds into F16 and multiplies in F16, rounding both the image and the kernel (about 6e-5
off on the golden fixture). A BF16 checkpoint's patch kernel (the real dots.ocr is BF16) is therefore stored as
BF16 whatever the file's type: no rounding at all, and the image stays F32.
"""


from __future__ import annotations

from pathlib import Path
from typing import Any

from ..inputs.preprocessing import ImagePreparer
from ..model.spellings import VISION_PREFIX
from .base import SourceTensor, checkpoint_tensors, display_name, import_gguf, pick_tensors, stream_gguf
from .decoder import GGUFExportError, read_config

MMPROJ_TYPES = ("f32", "bf16", "f16")
MMPROJ_FILE_TYPES = {"f32": 0, "f16": 1, "bf16": 32}  # llama_ftype values in llama.h

# checkpoint name (after "vision_tower.blocks.N.") -> llama.cpp name (after "v.blk.N."); mlp.fc1 is SiLU'd
# and multiplied by fc3 before fc2, i.e. gate, up and down.
BLOCK_NAMES = {
    "norm1.weight": "ln1.weight",
    "attn.qkv.weight": "attn_qkv.weight",
    "attn.qkv.bias": "attn_qkv.bias",
    "attn.proj.weight": "attn_out.weight",
    "attn.proj.bias": "attn_out.bias",
    "norm2.weight": "ln2.weight",
    "mlp.fc1.weight": "ffn_gate.weight",
    "mlp.fc1.bias": "ffn_gate.bias",
    "mlp.fc3.weight": "ffn_up.weight",
    "mlp.fc3.bias": "ffn_up.bias",
    "mlp.fc2.weight": "ffn_down.weight",
    "mlp.fc2.bias": "ffn_down.bias",
}
# checkpoint name (after "vision_tower.") -> llama.cpp name
TOWER_NAMES = {
    "patch_embed.patchifier.proj.weight": "v.patch_embd.weight",
    "patch_embed.patchifier.proj.bias": "v.patch_embd.bias",
    "patch_embed.patchifier.norm.weight": "v.pre_ln.weight",
    "post_trunk_norm.weight": "mm.post_norm.weight",
    "merger.ln_q.weight": "mm.input_norm.weight",
    "merger.ln_q.bias": "mm.input_norm.bias",
    "merger.mlp.0.weight": "mm.0.weight",
    "merger.mlp.0.bias": "mm.0.bias",
    "merger.mlp.2.weight": "mm.2.weight",
    "merger.mlp.2.bias": "mm.2.bias",
}
OPTIONAL = {"attn_qkv.bias", "attn_out.bias", "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias", "v.patch_embd.bias"}
"""Biases dots.ocr's config may leave out (`use_bias: false`); llama.cpp's graph adds them only if present."""


def vision_tensors(folder: Path, config: Any) -> list[SourceTensor]:
    """The vision tower's tensors in the order they are written, found across all safetensors shards."""
    where = checkpoint_tensors(folder, (VISION_PREFIX,))
    wanted = [(VISION_PREFIX + src, dst) for src, dst in TOWER_NAMES.items()]
    for i in range(config.vision_config.num_hidden_layers):
        wanted += [(f"{VISION_PREFIX}blocks.{i}.{src}", f"v.blk.{i}.{dst}") for src, dst in BLOCK_NAMES.items()]
    return pick_tensors(folder, where, wanted, "vision weights", "llama.cpp's dots_ocr projector needs them.",
                        optional=_optional)


def _optional(name: str) -> bool:
    return name in OPTIONAL or name.split(".", 3)[-1] in OPTIONAL  # "v.blk.N.<name>" or a tower-level name


def write_mmproj_gguf(folder: Path, out: Path, mmproj_type: str = "bf16", *, progress: bool = True) -> None:
    """Write the vision tower as a `clip` GGUF with llama.cpp's dots_ocr projector type."""
    check_mmproj_type(mmproj_type)
    folder = Path(folder)
    config = read_config(folder)
    vision = config.vision_config
    preparer = ImagePreparer.from_pretrained(folder)
    tensors = vision_tensors(folder, config)

    def type_of(t: SourceTensor) -> str:
        if t.gguf_name == "v.patch_embd.weight" and t.dtype == "BF16":
            return "bf16"  # lossless, and ggml then convolves in F32 (module docstring)
        return mmproj_type if len(t.shape) > 1 else "f32"

    def metadata(writer: Any) -> None:
        gguf = import_gguf()
        writer.add_type(gguf.GGUFType.MMPROJ)
        writer.add_name(display_name(folder))
        writer.add_file_type(MMPROJ_FILE_TYPES[mmproj_type])
        writer.add_clip_has_vision_encoder(True)
        writer.add_clip_projector_type(gguf.VisionProjectorType.DOTSOCR)
        writer.add_vision_projection_dim(config.hidden_size)
        writer.add_vision_image_size(0)  # dynamic resolution: the sizing comes from min/max pixels
        writer.add_vision_patch_size(vision.patch_size)
        writer.add_vision_embedding_length(vision.embed_dim)
        writer.add_vision_feed_forward_length(vision.intermediate_size)
        writer.add_vision_block_count(vision.num_hidden_layers)
        writer.add_vision_head_count(vision.num_attention_heads)
        writer.add_vision_attention_layernorm_eps(vision.rms_norm_eps)
        writer.add_vision_image_mean(preparer.image_mean)
        writer.add_vision_image_std(preparer.image_std)
        writer.add_vision_min_pixels(preparer.min_pixels)
        writer.add_vision_max_pixels(preparer.max_pixels)
        writer.add_vision_projector_scale_factor(vision.spatial_merge_size)
        writer.add_vision_use_silu(True)

    stream_gguf(out, "clip", tensors, type_of, metadata, desc=f"mmproj {mmproj_type.upper()}", progress=progress)


def check_mmproj_type(mmproj_type: str) -> None:
    if mmproj_type not in MMPROJ_TYPES:
        raise GGUFExportError(f"Unknown mmproj type {mmproj_type!r}; choose one of {', '.join(MMPROJ_TYPES)}.")


__all__ = ["MMPROJ_TYPES", "check_mmproj_type", "vision_tensors", "write_mmproj_gguf"]
