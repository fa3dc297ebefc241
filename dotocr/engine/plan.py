"""The one plan of what runs: device, precision, decoder, GGUF type and torch dtype.

Every decision about how the model runs is made here, from the settings and the machine's facts (the GPU's
free memory, whether bf16 measures faster on this CPU, whether llama.cpp is installed); the loader, the
llama.cpp decoder and `dotocr doctor` read the resulting `LoadPlan` and decide nothing themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

from ..config import Settings, data_dir
from ..errors import DotOCRError
from ..storage import write_atomic
from .llamacpp_runtime import INSTALL_HINT, gpu_offload_supported, llamacpp_installed

GIB = 1024**3
DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "4bit": "float16"}
# Memory a 16-bit load needs: 3.0 B parameters x 2 bytes, plus room for activations and the KV cache of a
# 1024 px crop with a few thousand generated tokens (measured figures in docs/performance.md).
WEIGHTS_16BIT_BYTES = 6.1e9
WORKING_HEADROOM_BYTES = 2.0 * GIB
GGUF_FOR_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "f16", "4bit": "q4_k_m", "auto": "q8_0"}
"""The llama.cpp decoder's weights for a precision: fp32 an F32 GGUF (exact against torch), 16-bit F16, 4-bit
Q4_K_M, and `auto` on a CPU Q8_0 (llama.cpp's fast, near-lossless type)."""


EXACT_BATCHES = {("torch", "fp32"), ("llamacpp", "f32")}
"""Decoders and weights whose batched rows come out bit for bit as single tokens do on a CPU (measured,
docs/performance.md section 10); elsewhere other kernels round a batch differently and can flip a near tie."""


class PrecisionError(DotOCRError):
    """The requested device/precision cannot run on this machine."""


@dataclass(frozen=True)
class LoadPlan:
    device: str
    precision: str
    reason: str
    decoder: str = "torch"
    gguf_type: str | None = None
    """For the llama.cpp decoder: the GGUF weight type (f32, f16, q8_0, q4_k_m)."""
    vision_precision: str = "auto"
    """"int8": the vision tower's Linear layers in dynamic int8 (CPU only); "auto": the tower in `torch_dtype`."""

    @property
    def torch_dtype(self) -> str:
        """The torch dtype (its name) of what runs on torch: the whole model with the torch decoder, the vision
        tower alone beside llama.cpp's decoder. A 4-bit or 16-bit GGUF on a CPU leaves the tower free to take
        whichever of bf16 and fp32 measures faster there."""
        if self.decoder == "llamacpp" and self.device == "cpu" and self.precision in ("fp16", "4bit"):
            return "bfloat16" if cpu_prefers_bf16() else "float32"
        return DTYPE_NAMES[self.precision]


def plan_load(settings: Settings, *, cuda: dict[str, Any] | None = None,
              llamacpp: bool | None = None) -> LoadPlan:
    """Decide where and how to run, and which decoder. `cuda` describes the GPU (see `describe_cuda`) and
    `llamacpp` says whether llama.cpp can be used; tests pass their own."""
    plan = _plan_decoder(settings, _plan_device(settings, describe_cuda() if cuda is None else cuda), llamacpp)
    if settings.vision_precision == "int8":
        if plan.device != "cpu" or (plan.decoder == "torch" and plan.precision == "4bit"):
            raise PrecisionError("--vision-precision int8 runs on the CPU only, and not with the torch decoder in "
                                 "4-bit; use --device cpu, or --vision-precision auto.")
        plan = dataclasses.replace(plan, vision_precision="int8", reason=plan.reason + "; vision tower in int8")
    return plan


def _plan_decoder(settings: Settings, plan: LoadPlan, llamacpp: bool | None) -> LoadPlan:
    """torch or llama.cpp, and for llama.cpp the GGUF type: `--gguf-type`, else by precision (fp32 an F32 file,
    exact against torch; 16-bit F16; 4-bit Q4_K_M; `auto` on a CPU Q8_0, llama.cpp's fast near-lossless type)."""
    wanted = settings.decoder
    if wanted == "torch":
        return plan
    installed = llamacpp_installed() if llamacpp is None else llamacpp
    if wanted == "llamacpp" and not installed:
        raise PrecisionError("The llama.cpp decoder was requested but llama-cpp-python (the pinned version) and "
                             f"gguf are not installed; {INSTALL_HINT}, or use --decoder torch.")
    if not installed:
        return dataclasses.replace(plan, reason=plan.reason + "; decoder: torch (llama-cpp-python not installed)")
    if wanted == "auto" and plan.device == "cuda" and llamacpp is None and not gpu_offload_supported():
        return dataclasses.replace(plan, reason=plan.reason + "; decoder: torch (this llama-cpp-python has no "
                                   "GPU support, and the GPU runs torch faster than the CPU runs llama.cpp)")
    if settings.gguf_type:
        gguf_type = settings.gguf_type
    elif plan.device == "cpu" and settings.precision == "auto":
        gguf_type = GGUF_FOR_PRECISION["auto"]
    else:
        gguf_type = GGUF_FOR_PRECISION[plan.precision]
    how = "as requested" if wanted == "llamacpp" else "llama.cpp is installed"
    return dataclasses.replace(plan, decoder="llamacpp", gguf_type=gguf_type,
                               reason=f"{plan.reason}; decoder: llama.cpp {gguf_type.upper()} GGUF ({how})")


def _plan_device(settings: Settings, cuda: dict[str, Any]) -> LoadPlan:
    device, precision = settings.device, settings.precision

    if device == "cuda" and not cuda["available"]:
        raise PrecisionError(
            "CUDA was requested but this PyTorch cannot see a GPU"
            + (" (it is a CPU-only build; install PyTorch's CUDA wheels, see the README)" if not cuda["built"]
               else "") + "; use --device cpu or --device auto."
        )
    if device == "auto":
        device = "cuda" if cuda["available"] else "cpu"

    if device == "cpu":
        if precision == "auto":
            fast = cpu_prefers_bf16()
            return LoadPlan("cpu", "bf16" if fast else "fp32",
                            f"no CUDA GPU; {'bf16' if fast else 'fp32'} measured faster on this CPU")
        return LoadPlan("cpu", precision, f"{precision} on CPU as requested")

    name, bf16 = cuda["name"], cuda["bf16"]
    # Free, not total: the desktop and other programs hold part of the card (a 6 GiB card has ~5 free).
    free = cuda.get("free_bytes", cuda["total_bytes"])
    if precision == "bf16" and not bf16:
        raise PrecisionError(f"The GPU {name} does not support bf16; choose fp16, 4bit or auto.")
    if precision != "auto":
        return LoadPlan("cuda", precision, f"{precision} on {name} as requested")
    gib = free / GIB
    if free >= WEIGHTS_16BIT_BYTES + WORKING_HEADROOM_BYTES:
        chosen = "bf16" if bf16 else "fp16"
        return LoadPlan("cuda", chosen, f"{name} has {gib:.1f} GiB free, room for 16-bit weights ({chosen})")
    return LoadPlan("cuda", "4bit", f"{name} has {gib:.1f} GiB free, too little for 16-bit weights; 4-bit NF4")


def describe_cuda() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"built": torch.version.cuda is not None, "available": torch.cuda.is_available(),
                            "name": None, "total_bytes": 0, "free_bytes": 0, "bf16": False}
    if info["available"]:
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        info.update(name=props.name, total_bytes=total, free_bytes=free, bf16=torch.cuda.is_bf16_supported())
    return info


def cpu_prefers_bf16() -> bool:
    """Time the two shapes an OCR call spends its time in, in bf16 and fp32, once per CPU; remember the answer.

    Whether bf16 beats fp32 depends on the CPU's instruction set, so it is measured, not assumed. Both shapes
    count: one token's matrix-vector product (decoding) and a block of rows (the vision tower and prefill).
    A vector product alone misleads: on CPUs with AMX, bf16 loses it slightly yet wins whole calls
    (docs/performance.md).
    """
    import torch

    key = f"v2|{platform.processor() or platform.machine()}|{os.cpu_count()}|torch {torch.__version__}"
    cache = data_dir() / "cpu_precision.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return bool(cached["bf16"])
    except (OSError, ValueError, KeyError):
        pass
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.randn(1536, 4224, dtype=dtype)
        rows = {n: torch.randn(n, 1536, dtype=dtype) for n in (1, 64)}
        for x in rows.values():
            x @ weight
        start = time.perf_counter()
        for _ in range(8):
            for x in rows.values():
                x @ weight
        timings[dtype] = time.perf_counter() - start
    bf16 = timings[torch.bfloat16] < timings[torch.float32]
    with contextlib.suppress(OSError):
        write_atomic(cache, json.dumps({"key": key, "bf16": bf16,
                                        "seconds": {str(k): v for k, v in timings.items()}}))
    return bf16


def speculates(setting: str, device: str, decoder: str, weights: str | None) -> bool:
    """Whether drafted tokens are checked in batches for this call: `on` always, `off` never, and `auto` only where
    that cannot change a greedy token (`EXACT_BATCHES` on the CPU). `weights` is the precision (torch) or the GGUF
    type (llama.cpp)."""
    if setting != "auto":
        return setting == "on"
    return device == "cpu" and (decoder, weights) in EXACT_BATCHES

