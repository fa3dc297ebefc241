"""The decode step's kernel choice (VectorLinear) and the one-position lm_head: same numbers, less work."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from dotocr.engine import DotsOCRForCausalLM
from dotocr.engine.decoders.base import DecodeRequest
from dotocr.engine.decoders.torch_decoder import TorchDecoder
from dotocr.engine.model.vector_linear import MAX_SAME_RESULT_IN_FEATURES, VectorLinear, use_vector_linear
from tests.windows_facts import running_under_wine


def _vector(linear: nn.Linear) -> VectorLinear:
    out = VectorLinear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                       dtype=linear.weight.dtype)
    out.load_state_dict(linear.state_dict())
    return out


class _Recorder(TorchDispatchMode):
    """The ATen operators VectorLinear calls, named as the profiler names them ("aten::addmv"); F.linear shows
    as "aten::linear", its kernels unseen. Used under Wine only (see `_ops`)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(f"{func.namespace}::{func._opname}")
        return func(*args, **(kwargs or {}))


def _ops(fn) -> set[str]:
    """The operators and kernels `fn` ran. Wine limitation: after torch.profiler (kineto) has run, Windows Python
    never exits under Wine (it hangs in ExitProcess), which would hang the Windows lane; there the operators
    are recorded by a dispatch mode instead, which shows VectorLinear's choice but not F.linear's kernels."""
    if running_under_wine():
        with _Recorder() as recorder:
            fn()
        return recorder.names
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 96), (1, 1, 96), (96,)])
def test_single_bf16_row_is_bit_identical_to_linear(bias, shape):
    torch.manual_seed(0)
    plain = nn.Linear(96, 200, bias=bias, dtype=torch.bfloat16)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    with torch.inference_mode():
        expected = plain(x)
        got = _vector(plain)(x)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("out_features", "bias"), [(1536, True), (256, True), (1536, False), (8960, False),
                                                    (32768, False)])
def test_every_switched_layer_is_bit_identical_at_the_real_decoders_shapes(out_features, bias):
    """dots.ocr's products of 1536 inputs (q/o, k/v, gate/up; a slice of lm_head), 12 inputs of each scale.

    Whether a shape is switched is this CPU's own answer (the AMX Xeon: yes; an AMD EPYC with AVX512-BF16: no);
    a switched layer must then agree with F.linear bit for bit, and one left alone keeps nn.Linear."""
    torch.manual_seed(0)
    plain = nn.Linear(1536, out_features, bias=bias, dtype=torch.bfloat16)
    with torch.no_grad():
        plain.weight.normal_(0, 0.02)
    layer = _vector(plain)
    layer.__class__ = nn.Linear
    switched = use_vector_linear(layer) == 1
    assert (type(layer) is VectorLinear) == switched
    with torch.inference_mode():
        for scale in (0.1, 1.0, 10.0, 100.0):
            for _ in range(3):
                x = torch.randn(1, 1, 1536, dtype=torch.bfloat16) * scale
                assert torch.equal(layer(x), plain(x))


def test_a_layer_whose_kernels_disagree_is_left_alone(monkeypatch):
    """The probe decides: a CPU whose vector kernel differs in one bit keeps nn.Linear."""
    layer = nn.Linear(64, 32, dtype=torch.bfloat16)
    real_mv = torch.addmv
    monkeypatch.setattr(torch, "addmv", lambda *args: real_mv(*args) + torch.finfo(torch.bfloat16).eps)
    assert use_vector_linear(layer) == 0 and type(layer) is nn.Linear


def test_a_long_reduction_keeps_linear():
    """down_proj's 8960 inputs: there the vector kernel's bf16 result may differ in the last bit, so no mv."""
    layer = _vector(nn.Linear(MAX_SAME_RESULT_IN_FEATURES + 1, 64, bias=False, dtype=torch.bfloat16))
    with torch.inference_mode():
        ops = _ops(lambda: layer(torch.randn(1, 1, MAX_SAME_RESULT_IN_FEATURES + 1, dtype=torch.bfloat16)))
    assert not ops & {"aten::addmv", "aten::mv"}


def test_only_a_single_bf16_cpu_row_takes_the_vector_kernel():
    torch.manual_seed(0)
    layer = _vector(nn.Linear(64, 128, dtype=torch.bfloat16))
    layer32 = _vector(nn.Linear(64, 128))
    with torch.inference_mode():
        one = _ops(lambda: layer(torch.randn(1, 1, 64, dtype=torch.bfloat16)))
        rows = _ops(lambda: layer(torch.randn(1, 5, 64, dtype=torch.bfloat16)))
        fp32 = _ops(lambda: layer32(torch.randn(1, 1, 64)))
        many = layer(torch.randn(3, 64, dtype=torch.bfloat16))
    assert one & {"aten::addmv", "aten::mv"} and "aten::addmm" not in one
    assert not rows & {"aten::addmv", "aten::mv"}
    assert not fp32 & {"aten::addmv", "aten::mv"}
    assert many.shape == (3, 128)


def test_cpu_torch_decoder_switches_the_text_decoder_only(dots_tiny):
    model = DotsOCRForCausalLM.from_pretrained(dots_tiny, dtype=torch.bfloat16).eval()
    names = set(model.state_dict())
    TorchDecoder(model, "cpu", "bf16")
    text = [m for m in [*model.model.modules(), model.lm_head] if isinstance(m, nn.Linear)]
    vision = [m for m in model.vision_tower.modules() if isinstance(m, nn.Linear)]
    assert text and any(type(m) is VectorLinear for m in text)  # the tiny shapes agree on every CPU seen so far
    assert vision and all(type(m) is nn.Linear for m in vision)
    assert set(model.state_dict()) == names


def test_bf16_greedy_decode_is_unchanged_on_the_golden_checkpoint(dots_tiny):
    """Every step's scores, not just the tokens, are bit-identical with and without VectorLinear."""
    inputs = load_file(dots_tiny / "inputs.safetensors")
    model = DotsOCRForCausalLM.from_pretrained(dots_tiny, dtype=torch.bfloat16).eval()

    def greedy():
        with torch.inference_mode():
            out = model.generate(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                 image_grid_thw=inputs["image_grid_thw"], max_new_tokens=12, min_new_tokens=12,
                                 do_sample=False, output_scores=True, return_dict_in_generate=True)
        return out.sequences, torch.stack(out.scores)

    before_tokens, before_scores = greedy()
    assert use_vector_linear(model.model) + use_vector_linear(model.lm_head) > 0
    after_tokens, after_scores = greedy()
    assert torch.equal(after_tokens, before_tokens)
    assert torch.equal(after_scores, before_scores)


def test_lm_head_sees_one_position_per_step(dots_tiny):
    """generate passes logits_to_keep=1 and our forward honours it: the prompt's other positions never reach
    the 151936-wide lm_head, in the prefill or after."""
    inputs = load_file(dots_tiny / "inputs.safetensors")
    model = DotsOCRForCausalLM.from_pretrained(dots_tiny, dtype=torch.float32).eval()
    decoder = TorchDecoder(model, "cpu", "fp32")
    positions: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: positions.append(args[0].shape[-2]))
    ids = inputs["input_ids"][0].tolist()
    request = DecodeRequest(prompt_ids=ids, pixel_values=inputs["pixel_values"], grid_thw=inputs["image_grid_thw"],
                            image_token_id=model.config.image_token_id, max_new_tokens=6)
    seen: list[int] = []
    try:
        tokens = decoder.generate(request, lambda token, probability: seen.append(token) or len(seen) >= 6)
    finally:
        hook.remove()
    assert len(ids) > 1 and len(tokens) == 6
    assert positions == [1] * 6


def test_full_prompt_logits_when_asked(dots_tiny):
    """Outside generate, a forward without logits_to_keep still scores every position (the golden test's use)."""
    inputs = load_file(dots_tiny / "inputs.safetensors")
    model = DotsOCRForCausalLM.from_pretrained(dots_tiny, dtype=torch.float32).eval()
    with torch.inference_mode():
        full = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                     image_grid_thw=inputs["image_grid_thw"]).logits
        last = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                     image_grid_thw=inputs["image_grid_thw"], logits_to_keep=1).logits
    assert full.shape[1] == inputs["input_ids"].shape[1] and last.shape[1] == 1
    assert torch.allclose(last[:, -1], full[:, -1], atol=1e-5)


def test_vector_linear_on_a_plain_linear_only():
    """Subclasses (e.g. a quantized layer) are left alone: their forward is not F.linear's."""

    class Custom(nn.Linear):
        pass

    module = nn.Sequential(nn.Linear(4, 4, dtype=torch.bfloat16), Custom(4, 4, dtype=torch.bfloat16),
                           nn.Linear(4, 4))
    assert use_vector_linear(module) == 1  # the fp32 layer never takes the vector kernel, so it is not switched
    assert type(module[0]) is VectorLinear and type(module[1]) is Custom
