"""The mmproj writer, checked by llama.cpp itself: its dots_ocr vision graph run by libmtmd on the file we wrote.

Measured on the golden fixture, two random images (max abs difference against our vision tower, outputs of
magnitude ~0.25):
- F32 file, BF16 patch kernel (the real checkpoint's kernel is BF16): 1.0-1.2e-7. The same computation.
- F32 file, F32 patch kernel (the fixture's own): 5.7-6.1e-5. ggml's conv_2d unfolds the image into F16 unless the
  kernel is BF16, rounding image and kernel to F16; rounding our input to F16 alone leaves 4.4e-5, the kernel
  the rest. This is why a BF16 checkpoint's kernel is always written as BF16.
- BF16 file: 9.0-9.2e-4; F16 file: 1.2-1.3e-4 (weight rounding).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

gguf = pytest.importorskip("gguf", reason="the mmproj writer needs the gguf package (pip install 'dotocr[llamacpp]')")

from dotocr.engine.gguf.convert import GGUFExportError, ensure_gguf, ensure_mmproj, mmproj_path  # noqa: E402
from dotocr.engine.gguf.mmproj import write_mmproj_gguf  # noqa: E402
from dotocr.engine.llamacpp_runtime import llamacpp_installed  # noqa: E402

needs_llamacpp = pytest.mark.skipif(not llamacpp_installed(), reason="needs llama-cpp-python 0.3.36 "
                                    "(pip install 'dotocr[llamacpp]'); CI installs it")
KERNEL = "vision_tower.patch_embed.patchifier.proj.weight"
INSTRUCTION = "Extract the text."


@pytest.fixture(scope="module")
def bf16_kernel(tmp_path_factory, dots_tiny) -> Path:
    """The golden checkpoint with its patch kernel stored in BF16, as in the real dots.ocr checkpoint."""
    from tiny_models import save_bf16_kernel_checkpoint

    return save_bf16_kernel_checkpoint(tmp_path_factory.mktemp("bf16-kernel"), dots_tiny)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """GGUF files written once per (checkpoint, type) for the module."""
    directory = tmp_path_factory.mktemp("mmproj")
    made: dict[tuple[Path, str], tuple[Path, Path]] = {}

    def get(folder: Path, mmproj_type: str) -> tuple[Path, Path]:
        if (folder, mmproj_type) not in made:
            made[folder, mmproj_type] = (ensure_gguf(folder, "f32", directory=directory, progress=False),
                                         ensure_mmproj(folder, mmproj_type, directory=directory, progress=False))
        return made[folder, mmproj_type]
    return get


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8), rng.integers(0, 256, (84, 56, 3), dtype=np.uint8)]


def ours(folder: Path, rgb: np.ndarray):
    """Our engine's preprocessing and vision tower, float32."""
    from dotocr.engine import DotsOCRForCausalLM
    from dotocr.engine.inputs.preprocessing import ImagePreparer

    prepared = ImagePreparer.from_pretrained(folder).prepare(Image.fromarray(rgb), 0)
    assert prepared.image.size == (rgb.shape[1], rgb.shape[0])  # neither side resizes
    model = DotsOCRForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        vision = model.vision_tower(prepared.pixel_values, prepared.grid_thw).numpy()
    return model, prepared, vision


def llama_vision(text_gguf: Path, mmproj: Path, rgb: np.ndarray) -> np.ndarray:
    from tests.mtmd_helpers import mtmd_session

    with mtmd_session(text_gguf, mmproj) as session, session.chunks("<image>", rgb) as chunks:
        [image] = [chunk for chunk in chunks if session.is_image(chunk)]
        return session.encode(image)


@needs_llamacpp
@pytest.mark.parametrize(("checkpoint", "mmproj_type", "bound"), [
    ("bf16_kernel", "f32", 1e-6),
    ("dots_tiny", "f32", 1e-4),
    ("dots_tiny", "f16", 3e-4),
    ("dots_tiny", "bf16", 2e-3),
])
def test_llama_cpp_vision_matches_our_tower(request, files, checkpoint, mmproj_type, bound):
    folder = request.getfixturevalue(checkpoint)
    text_gguf, mmproj = files(folder, mmproj_type)
    for rgb in images():
        _, prepared, expected = ours(folder, rgb)
        got = llama_vision(text_gguf, mmproj, rgb)
        assert got.shape == expected.shape == (prepared.image_tokens, expected.shape[1])
        assert float(np.abs(got - expected).max()) < bound


@needs_llamacpp
def test_llama_cpp_own_path_gives_our_prompt_and_our_greedy_tokens(files, bf16_kernel):
    """llama-server's path end to end (mtmd tokenize, encode, image decode, decode) against our torch engine."""
    from transformers import AutoTokenizer

    from dotocr.engine.inputs.prompts import ASSISTANT, END_USER, USER, encode_prompt
    from tests.mtmd_helpers import mtmd_session

    text_gguf, mmproj = files(bf16_kernel, "f32")
    tokenizer = AutoTokenizer.from_pretrained(bf16_kernel)
    prompt = f"{USER}<image>{INSTRUCTION}{END_USER}{ASSISTANT}"
    with mtmd_session(text_gguf, mmproj) as session:
        for rgb in images():
            model, prepared, _ = ours(bf16_kernel, rgb)
            ids = encode_prompt(tokenizer, INSTRUCTION, prepared.image_tokens)
            with session.chunks(prompt, rgb) as chunks:
                theirs = [i for chunk in chunks if not session.is_image(chunk) for i in session.text_ids(chunk)]
            pad = tokenizer.convert_tokens_to_ids("<|imgpad|>")
            assert theirs == [i for i in ids if i != pad]
            with torch.inference_mode():
                generated = model.generate(torch.tensor([ids]), pixel_values=prepared.pixel_values,
                                           image_grid_thw=prepared.grid_thw, max_new_tokens=8, do_sample=False)
            expected = generated[0, len(ids):].tolist()
            assert session.greedy(prompt, rgb, len(expected)) == expected


def test_layout_and_types(tmp_path, dots_tiny, bf16_kernel):
    for folder, kernel_type in ((dots_tiny, "F16"), (bf16_kernel, "BF16")):
        out = tmp_path / f"{folder.name}.gguf"
        write_mmproj_gguf(folder, out, "f16", progress=False)
        reader = gguf.GGUFReader(out)
        meta = {name: field.contents() for name, field in reader.fields.items()}
        assert meta["general.architecture"] == "clip"
        assert meta["clip.projector_type"] == "dots_ocr"
        assert meta["clip.vision.block_count"] == 2
        assert meta["clip.vision.projection_dim"] == 64  # the text model's hidden size
        assert meta["clip.vision.image_min_pixels"] == 3136
        types = {t.name: t.tensor_type.name for t in reader.tensors}
        assert types["v.patch_embd.weight"] == kernel_type
        assert types["v.blk.1.attn_qkv.weight"] == types["mm.0.weight"] == "F16"
        assert types["v.blk.1.ln1.weight"] == types["mm.0.bias"] == types["mm.post_norm.weight"] == "F32"
        assert "v.blk.0.attn_qkv.bias" not in types  # use_bias: false writes no bias
        assert list(reader.tensors[0].shape) == list(reversed(load_file(folder / "model.safetensors")[
            "vision_tower.patch_embed.patchifier.proj.weight"].shape))  # GGUF dims are reversed


def test_cached_once_and_refuses_a_checkpoint_without_a_vision_tower(tmp_path, dots_tiny):
    first = ensure_mmproj(dots_tiny, "f16", directory=tmp_path, progress=False)
    assert first == mmproj_path(dots_tiny, "f16", directory=tmp_path) and first.name.startswith("mmproj-")
    stamp = first.stat().st_mtime_ns
    assert ensure_mmproj(dots_tiny, "f16", directory=tmp_path, progress=False).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary file left

    broken = tmp_path / "text-only"
    broken.mkdir()
    for path in dots_tiny.iterdir():
        if path.suffix == ".json":
            shutil.copy(path, broken / path.name)
    weights = {k: v for k, v in load_file(dots_tiny / "model.safetensors").items() if "merger" not in k}
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(GGUFExportError, match=r"lacks vision weights \(vision_tower\.merger\.ln_q\.weight"):
        ensure_mmproj(broken, "f16", directory=tmp_path, progress=False)
    assert not any(p.name.startswith("mmproj-text-only") for p in tmp_path.iterdir())
    with pytest.raises(GGUFExportError, match="Unknown mmproj type 'q8_0'; choose one of f32, bf16, f16."):
        ensure_mmproj(dots_tiny, "q8_0", directory=tmp_path)
