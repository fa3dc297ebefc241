"""The decoder's linear layers, with one CPU kernel choice for the one-token decode step.

A decode step multiplies one row (the newest token's hidden state) by every weight matrix of the decoder, so
its speed is that of a matrix-vector product. For a bf16 row on the CPU, `F.linear(x, W)` hands oneDNN a
1-row matrix times the transposed weight, while `torch.mv(W, x)` hands it the weight as the row-major left
operand, the layout its AMX/AVX-512 matmul kernel streams best; where oneDNN does not take bf16 (a CPU
without AVX-512) both calls end in ATen's own kernels at the same speed. Measured on an AMX Xeon
(benchmarks/torch_step.py, docs/performance.md section 8): 1.2-1.6x faster per product in isolation, but a
whole decode step only 2-6 % faster with the limit below (12-16 % without it).

Numbers must not change, and whether they do depends on the CPU: both kernels add in fp32, but the order of
the additions is the kernel's own. On the AMX Xeon the two agree up to 2048 inputs and past that the bf16
result can differ in its last bit (seen from 3072 inputs on), enough to flip a greedy token on a near tie; on
an AMD EPYC with AVX512-BF16 they differ already at 1536 inputs. So a layer is switched only when its
product is at most `MAX_SAME_RESULT_IN_FEATURES` inputs long and this CPU, probed once per layer shape with
the layer's own weight, gives F.linear's bits (in dots.ocr on the Xeon: q, k, v, o, gate, up and lm_head,
three quarters of the decode step's bytes; down_proj, 8960 inputs, keeps `F.linear`; on the EPYC none).
tests/test_vector_linear.py checks that every switched layer is bit-identical on whichever machine runs it.

Only that case is rerouted: several rows (prefill, the vision tower), other dtypes (fp32, fp16, 4-bit) and
every other device (CUDA) keep `nn.Linear`'s own path, and parameter names and the state dict are unchanged.
The torch decoder switches its model's decoder layers and lm_head over when it runs on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_SAME_RESULT_IN_FEATURES = 2048
"""Longest reduction for which the vector kernel was measured to give F.linear's bits (see the module doc)."""


class VectorLinear(nn.Linear):
    """`nn.Linear` whose single-row bf16 CPU product runs on the matrix-vector kernel (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.numel() == self.in_features
                and self.in_features <= MAX_SAME_RESULT_IN_FEATURES):
            row = x.reshape(self.in_features)
            out = torch.mv(self.weight, row) if self.bias is None else torch.addmv(self.bias, self.weight, row)
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)


PROBE_SCALES = (0.1, 1.0, 10.0, 100.0)
"""Rows of these magnitudes, one each, must come out bit-identical before a layer shape is switched."""


def use_vector_linear(module: nn.Module) -> int:
    """Turn every plain `nn.Linear` under `module` whose product this CPU computes bit for bit alike both ways
    into a `VectorLinear`, in place; returns how many.

    Only the class changes (weights, names and hooks stay). Call it after loading: bitsandbytes replaces only
    modules whose type is exactly `nn.Linear`, so a model switched before quantizing would stay unquantized.
    """
    same: dict[tuple, bool] = {}
    count = 0
    for child in module.modules():
        if type(child) is not nn.Linear:
            continue
        weight = child.weight
        shape = (child.in_features, child.out_features, child.bias is not None, weight.dtype, weight.device.type)
        if shape not in same:
            same[shape] = _gives_linears_bits(child)
        if same[shape]:
            child.__class__ = VectorLinear
            count += 1
    return count


def _gives_linears_bits(layer: nn.Linear) -> bool:
    """Whether the vector kernel would be used for this layer and gives `F.linear`'s bits on probe rows."""
    weight = layer.weight
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or layer.in_features > MAX_SAME_RESULT_IN_FEATURES:
        return False
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for scale in PROBE_SCALES:
            row = (torch.randn(layer.in_features, generator=generator) * scale).to(torch.bfloat16)
            vector = torch.mv(weight, row) if layer.bias is None else torch.addmv(layer.bias, weight, row)
            if not torch.equal(vector, F.linear(row, weight, layer.bias)):
                return False
    return True
