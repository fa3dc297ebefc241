"""DotOCRInference on the golden tiny checkpoint and small random ones: the real loading and generation path."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading

import pytest
import torch
from engine_contract import EngineContract, sample_image
from safetensors.torch import load, save_file
from tiny_models import save_tiny_checkpoint

from dotocr.config import Settings
from dotocr.engine import DotOCRInference, make_engine
from dotocr.engine.checkpoint import resolve_checkpoint
from dotocr.engine.plan import PrecisionError, plan_load
from dotocr.errors import DotOCRError, ModelUnavailableError, OutOfMemoryError


def tiny_settings(folder, **overrides) -> Settings:
    """fp32 on the CPU, on the torch decoder unless a test asks for another (the tests that reach into the
    torch model need it); the `engine` fixture runs every contract test on both decoders."""
    return Settings(model=str(folder), device="cpu", precision="fp32", decoder="torch",
                    max_new_tokens=16).replace(**overrides)


DECODERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed (CI installs it)"))]


@pytest.fixture(scope="module", params=DECODERS)
def engine(dots_tiny, request):
    engine = DotOCRInference(tiny_settings(dots_tiny, decoder=request.param))
    engine.load()
    assert engine.state.decoder == request.param
    return engine


class TestLocalEngine(EngineContract):
    pass


def test_make_engine_builds_the_local_engine(dots_tiny):
    assert isinstance(make_engine(tiny_settings(dots_tiny)), DotOCRInference)


def test_nothing_loads_until_asked(dots_tiny):
    states = []
    engine = DotOCRInference(tiny_settings(dots_tiny), on_state=states.append)
    assert engine.state.status == "unloaded" and engine.device is None
    engine.ocr(sample_image(), max_new_tokens=2)
    assert [s.status for s in states] == ["loading", "loading", "ready", "busy", "ready"]
    assert engine.state.status == "ready"


@pytest.mark.parametrize("size", [(28, 28), (1, 1), (180, 14), (3000, 14), (14, 3000), (1023, 767),
                                  (2048, 1536), (4000, 300)])
def test_image_tokens_match_the_grid(engine, size):
    result = engine.ocr(Image_new(size), max_new_tokens=1)
    loaded = engine._loaded
    prepared = loaded.preparer.prepare(Image_new(size), engine.settings.max_image_size)
    t, h, w = prepared.grid_thw[0].tolist()
    assert result.image_tokens == t * h * w // 4 == prepared.image_tokens
    assert max(prepared.image.size) <= engine.settings.max_image_size
    assert prepared.image.size[0] % 28 == 0 and prepared.image.size[1] % 28 == 0
    assert (result.width, result.height) == size


def Image_new(size):
    from PIL import Image

    return Image.new("RGB", size, "white")


def test_max_image_size_limits_the_tokens(dots_tiny):
    big = DotOCRInference(tiny_settings(dots_tiny, max_image_size=1024))
    small = DotOCRInference(tiny_settings(dots_tiny, max_image_size=280))
    image = sample_image(2000, 1000)
    assert big.ocr(image, max_new_tokens=1).image_tokens > small.ocr(image, max_new_tokens=1).image_tokens
    assert small.ocr(image, max_new_tokens=1).image_tokens <= (280 // 28) * (140 // 28)


def test_four_bit_on_cpu(dots_tiny):
    import bitsandbytes as bnb

    engine = DotOCRInference(tiny_settings(dots_tiny, precision="4bit"))
    engine.load()
    model = engine._loaded.decoder.model
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    # NF4 with double quantization, fp16 compute (checked before the first call repacks weights for the CPU)
    assert q_proj.weight.quant_state.quant_type == "nf4" and q_proj.weight.quant_state.nested
    assert q_proj.compute_dtype == torch.float16
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    assert not isinstance(model.vision_tower.merger.mlp[0], bnb.nn.Linear4bit)
    result = engine.ocr(sample_image(), max_new_tokens=4)
    assert result.precision == "4bit" and result.generated_tokens >= 1


def _constant_token_checkpoint(tmp_path, dots_tiny, token_id: int):
    """A real checkpoint whose weights make `token_id` the most likely token at every step."""
    folder = save_tiny_checkpoint(tmp_path / f"always-{token_id}", dots_tiny)
    # read from bytes, not mapped: Windows refuses to rewrite a file while a mapping of it is open
    weights = load((folder / "model.safetensors").read_bytes())
    weights["model.embed_tokens.weight"][:, 0] = 50.0
    for name in list(weights):
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name].zero_()
    weights["lm_head.weight"][token_id] = 0
    weights["lm_head.weight"][token_id, 0] = 10.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_repetition_guard_stops_a_looping_model_early(tmp_path, dots_tiny):
    """A model stuck on '.' (dots.ocr's classic loop on dot leaders) is stopped long before max_new_tokens."""
    dot = 13  # '.' in the tiny tokenizer
    engine = DotOCRInference(tiny_settings(_constant_token_checkpoint(tmp_path, dots_tiny, dot)))
    result = engine.ocr(sample_image(), max_new_tokens=2000)
    assert result.stop_reason == "repetition"
    assert result.generated_tokens == 64 and result.loop_start == 0  # a one-token loop: 64 tokens at most
    assert set(result.raw) == {"."} and len(result.raw) == result.generated_tokens
    assert 0 < len(result.text) < 20  # the repeated tail was trimmed to one block


def test_a_random_model_ends_by_a_recorded_reason(engine):
    result = engine.ocr(sample_image(), max_new_tokens=40)
    assert result.stop_reason in ("eos", "max_new_tokens", "repetition")
    assert result.generated_tokens <= 40


def test_eos_stops_generation(tmp_path, dots_tiny):
    engine = DotOCRInference(tiny_settings(_constant_token_checkpoint(tmp_path, dots_tiny, 978)))
    result = engine.ocr(sample_image(), max_new_tokens=50)
    assert result.stop_reason == "eos" and result.loop_start is None
    assert result.generated_tokens == 1 and result.text == ""


def test_exact_max_new_tokens_stop(engine):
    result = engine.ocr(sample_image(), max_new_tokens=3)
    assert result.generated_tokens == 3 and result.stop_reason in ("max_new_tokens", "eos")


def test_one_generation_at_a_time_on_the_model(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny))
    engine.load()
    decoder = engine._loaded.decoder
    original, running, overlaps = decoder.generate, [0], []

    def watched(*args, **kwargs):
        running[0] += 1
        overlaps.append(running[0])
        try:
            return original(*args, **kwargs)
        finally:
            running[0] -= 1

    decoder.generate = watched
    threads = [threading.Thread(target=engine.ocr, args=(sample_image(),), kwargs={"max_new_tokens": 4})
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(overlaps) == 4 and max(overlaps) == 1


def test_the_choice_is_logged_with_its_reason(dots_tiny, caplog):
    caplog.set_level("INFO", logger="dotocr.engine")
    DotOCRInference(tiny_settings(dots_tiny)).load()
    assert any(r.getMessage().startswith("Loading ") and "fp32 on cpu: fp32 on CPU as requested" in r.getMessage()
               for r in caplog.records)


def test_no_retry_once_text_was_streamed(dots_tiny):
    """An out-of-memory error after text went out must not stream the answer twice."""
    engine = DotOCRInference(tiny_settings(dots_tiny))
    engine.load()
    model = engine._loaded.decoder.model
    pieces, vision_calls = [], []

    def fail_once_text_is_out(module, args):
        if pieces:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    handles = [model.lm_head.register_forward_pre_hook(fail_once_text_is_out),
               model.vision_tower.register_forward_pre_hook(lambda *a: vision_calls.append(1))]
    try:
        with pytest.raises(OutOfMemoryError, match="while reading"):
            engine.ocr(sample_image(), max_new_tokens=40, on_text=pieces.append)
    finally:
        for handle in handles:
            handle.remove()
    assert pieces and len(vision_calls) == 1  # no second attempt

class _FakeOOM:
    """Raises CUDA's out-of-memory error at the allocation boundary (the vision tower's first allocation)
    when an image has more patches than `limit`. We have no GPU here, so this is the only way to reach the path."""

    def __init__(self, model, limit: int) -> None:
        self.limit, self.calls = limit, []
        self.handle = model.vision_tower.register_forward_pre_hook(self)

    def __call__(self, module, args):
        patches = args[0].shape[0]
        self.calls.append(patches)
        if patches > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_retries_once_at_a_smaller_size(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny, max_image_size=560))
    engine.load()
    fake = _FakeOOM(engine._loaded.decoder.model, limit=900)
    try:
        result = engine.ocr(sample_image(560, 560), max_new_tokens=2)
    finally:
        fake.handle.remove()
    assert len(fake.calls) == 2 and fake.calls[0] > 900 >= fake.calls[1]
    assert result.image_tokens * 4 == fake.calls[1]


def test_oom_twice_names_the_knob_and_the_engine_recovers(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny, max_image_size=560))
    engine.load()
    fake = _FakeOOM(engine._loaded.decoder.model, limit=0)
    try:
        with pytest.raises(OutOfMemoryError, match="--max-image-size"):
            engine.ocr(sample_image(560, 560), max_new_tokens=2)
    finally:
        fake.handle.remove()
    assert engine.ocr(sample_image(), max_new_tokens=2).generated_tokens >= 1


def test_unload_frees_and_next_call_reloads(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny))
    engine.ocr(sample_image(), max_new_tokens=2)
    first = engine._loaded.decoder.model
    engine.unload()
    assert engine._loaded is None and engine.state.status == "unloaded"
    engine.ocr(sample_image(), max_new_tokens=2)
    assert engine._loaded.decoder.model is not first


def test_switching_precision_reloads_safely_during_use(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny))
    engine.load()
    worker = threading.Thread(target=engine.ocr, args=(sample_image(),), kwargs={"max_new_tokens": 8})
    worker.start()
    engine.reconfigure(engine.settings.replace(precision="bf16"))  # waits for the running call
    worker.join(60)
    result = engine.ocr(sample_image(), max_new_tokens=2)
    assert result.precision == "bf16"
    assert engine._loaded.decoder.model.dtype == torch.bfloat16


def test_idle_unload(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny, idle_minutes=1))
    engine.ocr(sample_image(), max_new_tokens=1)
    timer = engine._idle_timer
    assert timer is not None and timer.interval == 60
    timer.cancel()
    engine._idle_unload()  # what the timer runs
    assert engine._loaded is None


def test_renamed_checkpoint_keys_load_through_the_engine(dots_tiny, tmp_path):
    folder = tmp_path / "dots.mocr-like"
    shutil.copytree(dots_tiny, folder)
    weights = load((dots_tiny / "model.safetensors").read_bytes())
    save_file({k.replace(".attn.qkv.", ".attn.qkv_proj.").replace(".attn.proj.", ".attn.out_proj."): v
               for k, v in weights.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    reference = DotOCRInference(tiny_settings(dots_tiny)).ocr(sample_image(), max_new_tokens=6)
    renamed = DotOCRInference(tiny_settings(folder)).ocr(sample_image(), max_new_tokens=6)
    assert renamed.raw == reference.raw


# -- device and precision choice -------------------------------------------------------------------------

def _gpu(total_gib: float, bf16: bool = True) -> dict:
    return {"built": True, "available": True, "name": "Test GPU", "total_bytes": int(total_gib * 1024**3),
            "bf16": bf16}


NO_GPU = {"built": False, "available": False, "name": None, "total_bytes": 0, "bf16": False}


def test_auto_picks_4bit_on_a_6_gib_card():
    plan = plan_load(Settings(), cuda=_gpu(6))
    assert (plan.device, plan.precision) == ("cuda", "4bit") and "6.0 GiB" in plan.reason


def test_auto_picks_bf16_or_fp16_on_a_big_card():
    assert plan_load(Settings(), cuda=_gpu(24)).precision == "bf16"
    assert plan_load(Settings(), cuda=_gpu(16, bf16=False)).precision == "fp16"


def test_auto_without_gpu_measures_the_cpu():
    plan = plan_load(Settings(), cuda=NO_GPU)
    assert plan.device == "cpu" and plan.precision in ("bf16", "fp32") and "measured" in plan.reason


def test_impossible_requests_are_clear():
    with pytest.raises(PrecisionError, match="bf16"):
        plan_load(Settings(precision="bf16"), cuda=_gpu(24, bf16=False))
    with pytest.raises(PrecisionError, match="CPU-only build"):
        plan_load(Settings(device="cuda"), cuda=NO_GPU)


def test_missing_folder_is_one_sentence(tmp_path):
    engine = DotOCRInference(tiny_settings(tmp_path / "nowhere"))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        engine.load()
    assert engine.state.status == "error"


def test_uncached_repo_offline_names_the_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="someone/not-cached") as info:
        resolve_checkpoint("someone/not-cached")
    assert "HF_HUB_OFFLINE" in str(info.value) and "--model" in str(info.value)


def test_unreachable_endpoint_is_named(tmp_path):
    """A fresh interpreter with the hub online but pointed at a closed loopback port."""
    code = ("from dotocr.engine.checkpoint import resolve_checkpoint\n"
            "from dotocr.errors import DotOCRError\n"
            "try:\n    resolve_checkpoint('rednote-hilab/dots.ocr')\n"
            "except DotOCRError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HUB_CACHE": str(tmp_path), "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    message = out.stdout.strip()
    assert "rednote-hilab/dots.ocr" in message and "127.0.0.1:9" in message and "--model" in message
    assert "Traceback" not in out.stderr


def test_cuda_allocator_setting_is_made_early_and_never_overrides_the_user():
    code = "import os, dotocr; print(os.environ['PYTORCH_CUDA_ALLOC_CONF'])"
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    mine = {**env, "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
    theirs = subprocess.run([sys.executable, "-c", code], env=mine, capture_output=True, text=True, timeout=60)
    assert ours.stdout.strip() == "expandable_segments:True"
    assert theirs.stdout.strip() == "max_split_size_mb:64"


def test_errors_are_dotocr_errors(dots_tiny):
    engine = DotOCRInference(tiny_settings(dots_tiny))
    with pytest.raises(DotOCRError):
        engine.ocr(b"nope")


def test_a_checkpoint_built_entirely_here_runs_end_to_end(tmp_path):
    """Our own tokenizer (trained offline) and random weights: nothing borrowed from the golden fixture."""
    from tiny_models import save_own_checkpoint

    folder = save_own_checkpoint(tmp_path / "own")
    engine = DotOCRInference(tiny_settings(folder))
    for size in ((120, 40), (3000, 14), (28, 900)):
        result = engine.ocr(sample_image(*size), max_new_tokens=4)
        assert (result.width, result.height) == size and result.image_tokens >= 1
        assert result.prompt_tokens == result.image_tokens + len(
            engine._loaded.tokenizer.encode("Extract the text content from this image.")) + 5
    assert engine._loaded.eos_token_ids == [0, 7] and engine._loaded.image_token_id == 1
