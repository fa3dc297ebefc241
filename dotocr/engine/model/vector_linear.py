"""The decoder's linear layers, with one CPU kernel choice for the one-token decode step.

A decode step multiplies one row (the newest token's hidden state) by every weight matrix of the decoder, so
its speed is that of a matrix-vector product. For a bf16 row on the CPU, `F.linear(x, W)` hands oneDNN a
1-row matrix times the transposed weight, while `torch.mv(W, x)` hands it the weight as the row-major left
operand, the layout its AMX/AVX-512 matmul kernel streams best; where oneDNN does not take bf16 (a CPU
without AVX-512) both calls end in ATen's own kernels at the same speed. Measured on an AMX Xeon
(benchmarks/torch_step.py, docs/performance.md section 8): 1.2-1.6x faster per product in isolation, but a
whole decode step only 2-6 % faster with the limit below (12-16 % without it).

Numbers must not change, and they do not only while the reduction is short: both kernels add in fp32, but
past 2048 inputs oneDNN splits the sum differently for the two layouts and the bf16 result can differ in its
last bit (seen from 3072 inputs on), enough to flip a greedy token on a near tie. So only products of at
most `MAX_SAME_RESULT_IN_FEATURES` inputs are rerouted (in dots.ocr: q, k, v, o, gate, up and lm_head, three
quarters of the decode step's bytes; down_proj, 8960 inputs, keeps `F.linear`). tests/test_vector_linear.py
checks the results are bit-identical at the real model's shapes on whichever machine runs it.

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


def use_vector_linear(module: nn.Module) -> int:
    """Turn every plain `nn.Linear` under `module` into a `VectorLinear` in place; returns how many.

    Only the class changes (weights, names and hooks stay). Call it after loading: bitsandbytes replaces only
    modules whose type is exactly `nn.Linear`, so a model switched before quantizing would stay unquantized.
    """
    count = 0
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = VectorLinear
            count += 1
    return count
