"""The vision tower of a dots.ocr checkpoint as llama.cpp's `dots_ocr` mmproj GGUF.

Our own engine never needs this file: it runs the vision tower on PyTorch and feeds llama.cpp embeddings. The
mmproj is for llama.cpp's own multimodal path (`llama-server -m text.gguf --mmproj mmproj.gguf`, Ollama, the
peer benchmark): `dotocr convert-gguf` writes it beside the decoder's GGUF.

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

import json
import logging
from pathlib import Path
from typing import Any

from .decoder import (
    GGUFExportError,
    SourceTensor,
    cache_dir,
    checkpoint_key,
    display_name,
    import_gguf,
    staged_output,
    stream_gguf,
)

log = logging.getLogger("dotocr.engine")

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
TOWER_NAMES = {
    "vision_tower.patch_embed.patchifier.proj.weight": "v.patch_embd.weight",
    "vision_tower.patch_embed.patchifier.proj.bias": "v.patch_embd.bias",
    "vision_tower.patch_embed.patchifier.norm.weight": "v.pre_ln.weight",
    "vision_tower.post_trunk_norm.weight": "mm.post_norm.weight",
    "vision_tower.merger.ln_q.weight": "mm.input_norm.weight",
    "vision_tower.merger.ln_q.bias": "mm.input_norm.bias",
    "vision_tower.merger.mlp.0.weight": "mm.0.weight",
    "vision_tower.merger.mlp.0.bias": "mm.0.bias",
    "vision_tower.merger.mlp.2.weight": "mm.2.weight",
    "vision_tower.merger.mlp.2.bias": "mm.2.bias",
}
OPTIONAL = {"attn_qkv.bias", "attn_out.bias", "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias", "v.patch_embd.bias"}
"""Biases dots.ocr's config may leave out (`use_bias: false`); llama.cpp's graph adds them only if present."""


def mmproj_path(folder: Path, mmproj_type: str, *, directory: Path | None = None) -> Path:
    """Where the mmproj of this checkpoint and type lives in the cache (whether or not it exists yet)."""
    check_mmproj_type(mmproj_type)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in display_name(Path(folder))) or "model"
    return (directory or cache_dir()) / f"mmproj-{name}-{checkpoint_key(folder)}-{mmproj_type}.gguf"


def ensure_mmproj(folder: Path, mmproj_type: str = "bf16", *, directory: Path | None = None,
                  progress: bool = True) -> Path:
    """The mmproj of `folder`, written now if it is not in the cache yet (a few seconds; ~0.7-2.5 GB)."""
    folder = Path(folder)
    target = mmproj_path(folder, mmproj_type, directory=directory)
    if target.is_file():
        return target
    log.info("Writing the vision tower of %s as a %s mmproj (once): %s", folder, mmproj_type.upper(), target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_output(target) as tmp:
            write_mmproj_gguf(folder, tmp, mmproj_type, progress=progress)
    except OSError as exc:
        raise GGUFExportError(f"Could not write {target} ({exc.strerror or exc}); free some disk space, or point "
                              "DOTOCR_DATA_DIR at a drive with room.") from None
    return target


def read_vision_config(folder: Path) -> dict[str, Any]:
    """The numbers llama.cpp's dots_ocr graph needs, from config.json and preprocessor_config.json."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"The checkpoint in {folder} has no readable config.json ({exc}).") from None
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise GGUFExportError(f"The checkpoint in {folder} has no vision_config; is it a dots.ocr checkpoint?")
    try:
        preprocessor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        preprocessor = {}
    text = config.get("text_config") or config
    try:
        return {
            "embed_dim": int(vision.get("embed_dim") or vision["hidden_size"]),
            "intermediate_size": int(vision["intermediate_size"]),
            "num_hidden_layers": int(vision["num_hidden_layers"]),
            "num_attention_heads": int(vision["num_attention_heads"]),
            "patch_size": int(vision.get("patch_size", 14)),
            "spatial_merge_size": int(vision.get("spatial_merge_size", 2)),
            "rms_norm_eps": float(vision.get("rms_norm_eps", 1e-5)),
            "text_hidden_size": int(text["hidden_size"]),
            "image_mean": [float(v) for v in preprocessor.get("image_mean", (0.48145466, 0.4578275, 0.40821073))],
            "image_std": [float(v) for v in preprocessor.get("image_std", (0.26862954, 0.26130258, 0.27577711))],
            "min_pixels": int(preprocessor.get("min_pixels", 3136)),
            "max_pixels": int(preprocessor.get("max_pixels", 11289600)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise GGUFExportError(f"The vision_config in {folder} lacks {exc}; is it a dots.ocr checkpoint?") from None


def vision_tensors(folder: Path, config: dict[str, Any]) -> list[SourceTensor]:
    """The vision tower's tensors in the order they are written, found across all safetensors shards."""
    from safetensors import safe_open

    where: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                if name.startswith("vision_tower."):
                    piece = handle.get_slice(name)
                    where[name] = (file, tuple(piece.get_shape()), piece.get_dtype())
    wanted = list(TOWER_NAMES.items())
    for i in range(config["num_hidden_layers"]):
        wanted += [(f"vision_tower.blocks.{i}.{src}", f"v.blk.{i}.{dst}") for src, dst in BLOCK_NAMES.items()]
    missing = [src for src, dst in wanted if src not in where and not _optional(dst)]
    if missing:
        raise GGUFExportError(f"The checkpoint in {folder} lacks vision weights ({', '.join(missing[:3])}"
                              f"{' ...' if len(missing) > 3 else ''}); llama.cpp's dots_ocr projector needs them.")
    return [SourceTensor(dst, src, *where[src]) for src, dst in wanted if src in where]


def _optional(name: str) -> bool:
    return name in OPTIONAL or name.split(".", 3)[-1] in OPTIONAL  # "v.blk.N.<name>" or a tower-level name


def write_mmproj_gguf(folder: Path, out: Path, mmproj_type: str = "bf16", *, progress: bool = True) -> None:
    """Write the vision tower as a `clip` GGUF with llama.cpp's dots_ocr projector type."""
    check_mmproj_type(mmproj_type)
    folder = Path(folder)
    config = read_vision_config(folder)
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
        writer.add_vision_projection_dim(config["text_hidden_size"])
        writer.add_vision_image_size(0)  # dynamic resolution: the sizing comes from min/max pixels
        writer.add_vision_patch_size(config["patch_size"])
        writer.add_vision_embedding_length(config["embed_dim"])
        writer.add_vision_feed_forward_length(config["intermediate_size"])
        writer.add_vision_block_count(config["num_hidden_layers"])
        writer.add_vision_head_count(config["num_attention_heads"])
        writer.add_vision_attention_layernorm_eps(config["rms_norm_eps"])
        writer.add_vision_image_mean(config["image_mean"])
        writer.add_vision_image_std(config["image_std"])
        writer.add_vision_min_pixels(config["min_pixels"])
        writer.add_vision_max_pixels(config["max_pixels"])
        writer.add_vision_projector_scale_factor(config["spatial_merge_size"])
        writer.add_vision_use_silu(True)

    stream_gguf(out, "clip", tensors, type_of, metadata, desc=f"mmproj {mmproj_type.upper()}", progress=progress)


def check_mmproj_type(mmproj_type: str) -> None:
    if mmproj_type not in MMPROJ_TYPES:
        raise GGUFExportError(f"Unknown mmproj type {mmproj_type!r}; choose one of {', '.join(MMPROJ_TYPES)}.")


__all__ = ["MMPROJ_TYPES", "ensure_mmproj", "mmproj_path", "read_vision_config", "vision_tensors",
           "write_mmproj_gguf"]
