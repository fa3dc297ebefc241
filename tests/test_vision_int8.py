"""`--vision-precision int8`: offered because the golden fixture's greedy tokens stay the official ones with it,
on both decoders; planned for the CPU only."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from dotocr.config import Settings
from dotocr.engine.decoders.base import DecodeRequest
from dotocr.engine.loading import load_checkpoint
from dotocr.engine.plan import LoadPlan, PrecisionError, plan_load

pytestmark = pytest.mark.timeout(300)

DECODERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (CI installs it)"))]


@pytest.mark.parametrize("decoder", DECODERS)
def test_the_golden_tokens_survive_an_int8_vision_tower(decoder, dots_tiny):
    inputs, expected = load_file(dots_tiny / "inputs.safetensors"), load_file(dots_tiny / "expected.safetensors")
    plan = LoadPlan("cpu", "fp32", "test", decoder=decoder, gguf_type="f32" if decoder == "llamacpp" else None,
                    vision_precision="int8")
    loaded = load_checkpoint(dots_tiny, plan)
    try:
        tower = loaded.decoder.vision_tower if decoder == "llamacpp" else loaded.decoder.model.vision_tower
        assert type(tower.blocks[0].attn.qkv).__module__.startswith("torch.ao.nn.quantized.dynamic")
        request = DecodeRequest(inputs["input_ids"][0].tolist(), inputs["pixel_values"], inputs["image_grid_thw"],
                                1000, 8)
        assert loaded.decoder.generate(request, lambda t, p: False) == expected["greedy_tokens"].tolist()
        with torch.inference_mode():
            embeds = tower(inputs["pixel_values"], inputs["image_grid_thw"])
        error = (embeds - expected["vision_embeddings"]).norm() / expected["vision_embeddings"].norm()
        assert 0 < error < 0.05  # measured 0.026 (docs/performance.md, section 10)
    finally:
        loaded.decoder.close()


def test_int8_vision_is_planned_for_the_cpu_only():
    cpu = plan_load(Settings(device="cpu", precision="fp32", decoder="torch", vision_precision="int8"),
                    cuda={"built": False, "available": False})
    assert cpu.vision_precision == "int8" and "int8" in cpu.reason
    gpu = {"built": True, "available": True, "name": "GPU", "total_bytes": 12 << 30, "free_bytes": 12 << 30,
           "bf16": True}
    with pytest.raises(PrecisionError, match="CPU only"):
        plan_load(Settings(device="cuda", vision_precision="int8"), cuda=gpu, llamacpp=False)
    assert plan_load(Settings(device="cpu", precision="fp32", decoder="torch"),
                     cuda={"built": False, "available": False}).vision_precision == "auto"
