"""The native dots.ocr model: golden parity, official names, attention equivalence, dtypes, 4-bit."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tiny_models import tiny_config, tiny_model
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

import dotocr.engine.model.modeling_dots_ocr  # noqa: F401  (registers dots_ocr)
from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM
from dotocr.engine.model.modeling_dots_ocr import apply_vision_rotary


@pytest.fixture(scope="module")
def golden(dots_tiny):
    model = AutoModelForCausalLM.from_pretrained(dots_tiny, dtype=torch.float32)
    return model, load_file(dots_tiny / "inputs.safetensors"), load_file(dots_tiny / "expected.safetensors")


def test_auto_classes_return_our_model_without_remote_code(golden):
    model, _, _ = golden
    assert type(model) is DotsOCRForCausalLM
    assert isinstance(AutoConfig.for_model("dots_ocr"), DotsOCRConfig)


def test_golden_vision_embeddings(golden):
    model, inputs, expected = golden
    with torch.no_grad():
        out = model.vision_tower(inputs["pixel_values"], inputs["image_grid_thw"])
    assert out.shape == expected["vision_embeddings"].shape
    assert (out - expected["vision_embeddings"]).abs().max().item() < 1e-4


def test_golden_logits(golden):
    model, inputs, expected = golden
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                       image_grid_thw=inputs["image_grid_thw"]).logits
    assert (logits - expected["logits"]).abs().max().item() < 1e-4


def test_golden_greedy_generation_uses_pixels_on_first_step_only(golden):
    model, inputs, expected = golden
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            out = model.generate(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                 image_grid_thw=inputs["image_grid_thw"], max_new_tokens=8, do_sample=False)
    finally:
        hook.remove()
    assert out[0, inputs["input_ids"].shape[1]:].tolist() == expected["greedy_tokens"].tolist()
    assert len(calls) == 1


def test_parameter_names_are_the_official_ones(golden, dots_tiny):
    model, _, _ = golden
    official = set(load_file(dots_tiny / "model.safetensors"))
    assert set(model.state_dict()) == official
    for name in ("vision_tower.patch_embed.patchifier.proj.weight", "vision_tower.blocks.0.attn.qkv.weight",
                 "vision_tower.blocks.0.norm1.weight", "vision_tower.blocks.0.mlp.fc1.weight",
                 "vision_tower.post_trunk_norm.weight", "vision_tower.merger.ln_q.weight",
                 "vision_tower.merger.mlp.0.weight", "model.layers.0.self_attn.q_proj.weight", "lm_head.weight"):
        assert name in official


def test_checkpoint_code_is_never_executed(dots_tiny, tmp_path):
    """A checkpoint folder whose auto_map points at code that would leave a marker file if it ever ran."""
    folder = tmp_path / "evil"
    shutil.copytree(dots_tiny, folder)
    marker = tmp_path / "code-ran"
    payload = f"open({str(marker)!r}, 'w').write('x')\n"
    (folder / "configuration_dots.py").write_text(payload)
    (folder / "modeling_dots_ocr.py").write_text(payload)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model) is DotsOCRForCausalLM
    assert not marker.exists()


def test_alternative_attention_key_spelling_loads(dots_tiny, tmp_path, golden):
    model, inputs, expected = golden
    folder = tmp_path / "renamed"
    shutil.copytree(dots_tiny, folder)
    weights = load_file(dots_tiny / "model.safetensors")
    renamed = {k.replace(".attn.qkv.", ".attn.qkv_proj.").replace(".attn.proj.", ".attn.out_proj."): v
               for k, v in weights.items()}
    assert renamed.keys() != weights.keys()
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        out = reloaded.vision_tower(inputs["pixel_values"], inputs["image_grid_thw"])
    assert (out - expected["vision_embeddings"]).abs().max().item() < 1e-4


def test_official_config_defaults():
    config = DotsOCRConfig()
    vision = config.vision_config
    assert (vision.embed_dim, vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers) == (
        1536, 1536, 4224, 42)
    assert (vision.num_attention_heads, vision.patch_size, vision.spatial_merge_size) == (12, 14, 2)
    assert (vision.temporal_patch_size, vision.rms_norm_eps, vision.use_bias, vision.post_norm) == (
        1, 1e-5, False, True)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads) == (1536, 28, 12, 2)
    assert (config.image_token_id, config.video_token_id) == (151665, 151656)


# -- attention: per-image SDPA equals the official dense block-diagonal mask -------------------------------

def dense_reference_attention(attn, hidden, cu_seqlens, rotary):
    """The official eager path: one S x S score matrix with a block-diagonal mask over all images."""
    seq = hidden.shape[0]
    q, k, v = attn.qkv(hidden).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_vision_rotary(q, rotary), apply_vision_rotary(k, rotary)
    mask = torch.full((1, seq, seq), torch.finfo(q.dtype).min)
    for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):
        mask[..., a:b, a:b] = 0
    q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    weights = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(attn.head_dim) + mask
    out = torch.matmul(F.softmax(weights, dim=-1, dtype=torch.float32), v)
    return attn.proj(out.transpose(0, 1).reshape(seq, -1))


@pytest.mark.parametrize("grids", [
    [[1, 2, 2]],                       # a one-token image
    [[1, 4, 6], [1, 6, 4], [1, 2, 2]],  # several images in one prompt
    [[1, 2, 60]],                      # very wide
    [[1, 60, 2]],                      # very tall
])
def test_per_image_attention_matches_dense_mask(grids):
    model = tiny_model(seed=1)
    tower = model.vision_tower
    grid = torch.tensor(grids)
    patches = int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum())
    hidden = torch.randn(patches, 64)
    rotary = tower.rotary_embedding(grid, hidden.device)
    cu = [0, *torch.cumsum(grid[:, 1] * grid[:, 2], 0).tolist()]
    attn = tower.blocks[0].attn
    with torch.no_grad():
        ours = attn(hidden, cu, rotary)
        ref = dense_reference_attention(attn, hidden, cu, rotary)
    assert (ours - ref).abs().max().item() < 1e-5
    with torch.no_grad():
        merged = tower(torch.randn(patches, 3 * 14 * 14), grid)
    assert merged.shape == (patches // 4, 64)


def test_image_token_count_mismatch_names_both_counts():
    model = tiny_model()
    grid = torch.tensor([[1, 4, 4]])
    ids = torch.tensor([[5, 1000, 1000, 1000, 6]])  # 3 placeholders, the image gives 4
    with pytest.raises(ValueError, match=r"3 image tokens.*produce 4 embeddings"):
        model(input_ids=ids, pixel_values=torch.randn(16, 588), image_grid_thw=grid)


# -- dtypes and 4-bit -------------------------------------------------------------------------------------

def _prompt(grid):
    n = int(grid.prod()) // 4
    return torch.tensor([[1005, 1001] + [1000] * n + [1002, 7, 8, 1006, 1007]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forward_and_generate_in_each_dtype(dtype):
    model = tiny_model().to(dtype)
    grid = torch.tensor([[1, 4, 6]])
    ids = _prompt(grid)
    pixels = torch.randn(24, 588)  # float32 on purpose: the model casts to its own dtype
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
        out = model.generate(ids, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=4, do_sample=False)
    assert logits.dtype == dtype and torch.isfinite(logits.float()).all()
    assert out.shape[1] == ids.shape[1] + 4


def test_bitsandbytes_4bit_forward_on_cpu(tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    folder = tmp_path / "tiny"
    reference = tiny_model(seed=3)
    reference.save_pretrained(folder)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float16,
                               llm_int8_skip_modules=["lm_head", "vision_tower.merger"])
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=torch.float16,
                                                 device_map="cpu")
    assert isinstance(model.vision_tower.blocks[0].attn.qkv, bnb.nn.Linear4bit)
    assert isinstance(model.model.layers[0].mlp.gate_proj, bnb.nn.Linear4bit)
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    grid = torch.tensor([[1, 4, 6]])
    ids, pixels = _prompt(grid), torch.randn(24, 588)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
        ref = reference(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
        out = model.generate(ids, pixel_values=pixels, image_grid_thw=grid, max_new_tokens=4, do_sample=False)
    assert torch.isfinite(logits.float()).all()
    # 4-bit is lossy, but it must still be the same network: close to the fp32 logits, far from noise.
    err = (logits.float() - ref).abs().mean() / ref.abs().mean()
    assert err < 0.5
    assert out.shape[1] == ids.shape[1] + 4


def test_config_round_trip_keeps_official_fields(tmp_path):
    config = tiny_config()
    config.save_pretrained(tmp_path)
    again = DotsOCRConfig.from_pretrained(tmp_path)
    assert again.vision_config.embed_dim == 64 and again.image_token_id == 1000


def test_loading_never_asks_about_remote_code(dots_tiny):
    """transformers asks interactively when a folder's auto_map names code it does not know; we never get there."""
    import subprocess
    import sys

    code = ("import dotocr.engine.model.modeling_dots_ocr\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            f"AutoModelForCausalLM.from_pretrained({str(dots_tiny)!r})\n"
            f"AutoTokenizer.from_pretrained({str(dots_tiny)!r})\n"
            "print('loaded')\n")
    out = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded" in out.stdout
    assert "custom code" not in out.stdout + out.stderr
