"""Getting the checkpoint, choosing device and precision, and loading model + tokenizer + image preparer.

This is the one place that decides device and precision. Every other module asks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings, data_dir
from ..errors import DotOCRError, ModelUnavailableError, one_line
from ..storage import write_atomic

log = logging.getLogger("dotocr.engine")

GIB = 1024**3
DTYPE_NAMES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "4bit": "float16"}
# Memory a 16-bit load needs: 3.0 B parameters x 2 bytes, plus room for activations and the KV cache of a
# 1024 px crop with a few thousand generated tokens (measured figures in docs/performance.md).
WEIGHTS_16BIT_BYTES = 6.1e9
WORKING_HEADROOM_BYTES = 2.0 * GIB
# Kept in 16 bits under 4-bit loading (measured in docs/performance.md): lm_head picks every token, and 4-bit
# flips its choice where the model hesitates between look-alike characters, for 330 MiB a 6 GiB card can spare;
# the merger adds the most error of any layer (13 % vs 9 %) and feeds every image token into the decoder, for
# 67 MiB. The patch conv is a Conv2d, which bitsandbytes does not quantise.
UNQUANTIZED_MODULES = ("lm_head", "vision_tower.merger")
GGUF_FOR_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "f16", "4bit": "q4_k_m", "auto": "q8_0"}
"""The llama.cpp decoder's weights for a precision: fp32 an F32 GGUF (exact against torch), 16-bit F16, 4-bit
Q4_K_M, and `auto` on a CPU Q8_0 (llama.cpp's fast, near-lossless type)."""
BNB_CPU_BLOCK = 64  # bitsandbytes' CPU 4-bit kernel needs input widths in multiples of its block size
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]  # never *.py


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


@dataclass
class LoadedModel:
    decoder: Any
    """A `decoders.base.Decoder`: what picks the tokens."""
    tokenizer: Any
    preparer: Any
    eos_token_ids: list[int]
    image_token_id: int
    folder: Path
    device: str
    precision: str
    memory: GpuMemory | None = None
    """Peak-memory bookkeeping on CUDA; None on the CPU."""
    gguf_type: str | None = None
    """With the llama.cpp decoder: its GGUF weight type."""


class GpuMemory:
    """Peak CUDA memory of one OCR call, for `OCRResult.peak_gpu_mb`."""

    def reset(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)


# -- device and precision ----------------------------------------------------------------------------------

def plan_load(settings: Settings, *, cuda: dict[str, Any] | None = None,
              llamacpp: bool | None = None) -> LoadPlan:
    """Decide where and how to run, and which decoder. `cuda` describes the GPU (see `describe_cuda`) and
    `llamacpp` says whether llama.cpp can be used; tests pass their own."""
    plan = _plan_device(settings, describe_cuda() if cuda is None else cuda)
    return _plan_decoder(settings, plan, llamacpp)


def _plan_decoder(settings: Settings, plan: LoadPlan, llamacpp: bool | None) -> LoadPlan:
    """torch or llama.cpp, and for llama.cpp the GGUF type: `--gguf-type`, else by precision (fp32 an F32 file,
    exact against torch; 16-bit F16; 4-bit Q4_K_M; `auto` on a CPU Q8_0, llama.cpp's fast near-lossless type)."""
    from .llamacpp_runtime import INSTALL_HINT, gpu_offload_supported, llamacpp_installed

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


# -- getting the checkpoint --------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class CheckpointInfo:
    """What `--model` names, found without downloading: the rules `resolve_checkpoint` applies, for `doctor`."""

    model: str
    kind: str
    """"folder" (a path on this machine) or "repo" (a Hugging Face repo id)."""
    path: Path | None
    """The folder, or a repo's snapshot in the Hugging Face cache; None for a repo not cached yet."""
    problem: str | None = None
    """The one sentence loading would fail with, if it will."""


def describe_checkpoint(model: str) -> CheckpointInfo:
    """Folder, cached repo or repo still to download; never touches the network."""
    path = Path(model).expanduser()
    if path.is_dir():
        problem = None if (path / "config.json").exists() else (
            f"The folder {path} holds no config.json; point --model at a dots.ocr checkpoint folder.")
        return CheckpointInfo(model, "folder", path, problem)
    if not _REPO_ID.match(model) or path.exists():
        return CheckpointInfo(model, "folder", None, (
            f"The model folder {model} does not exist; pass an existing checkpoint folder or a Hugging Face "
            "repo id such as rednote-hilab/dots.ocr."))
    from huggingface_hub import snapshot_download

    try:
        snapshot: Path | None = Path(snapshot_download(model, allow_patterns=CHECKPOINT_PATTERNS,
                                                       local_files_only=True))
    except Exception:  # not (completely) cached
        snapshot = None
    return CheckpointInfo(model, "repo", snapshot)


def resolve_checkpoint(model: str, on_progress: Callable[[float], None] | None = None) -> Path:
    """A local folder as is; a repo id from the Hugging Face cache, downloading (resumably) if needed."""
    info = describe_checkpoint(model)
    if info.problem:
        raise ModelUnavailableError(info.problem)
    if info.path is not None:
        return info.path
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import ENDPOINT, HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise ModelUnavailableError(
            f"The model {model} is not in the Hugging Face cache and offline mode (HF_HUB_OFFLINE) is on; "
            "download it once online, or pass a local checkpoint folder with --model.")
    try:
        kwargs: dict[str, Any] = {"allow_patterns": CHECKPOINT_PATTERNS}
        if on_progress is not None:
            kwargs["tqdm_class"] = _progress_tqdm(on_progress)
        return Path(snapshot_download(model, **kwargs))
    except Exception as exc:
        raise ModelUnavailableError(
            f"Could not download {model} from {ENDPOINT} ({one_line(exc, 200)}); check the network or set HF_ENDPOINT "
            "to a mirror, or download the checkpoint elsewhere and pass its folder with --model."
        ) from None


def _progress_tqdm(on_progress: Callable[[float], None]):
    from tqdm.auto import tqdm

    class ProgressTqdm(tqdm):
        """Forwards byte progress to the engine's state while keeping the usual console bar."""

        def update(self, n=1):
            result = super().update(n)
            if self.total and getattr(self, "unit", "") == "B":
                on_progress(min(1.0, self.n / self.total))
            return result

    return ProgressTqdm


# -- loading ----------------------------------------------------------------------------------------------

def load_checkpoint(folder: Path, plan: LoadPlan,
                    on_progress: Callable[[float], None] | None = None) -> LoadedModel:
    """Decoder, tokenizer, image preparer and stop ids from one checkpoint folder. Never runs checkpoint code.

    `on_progress` hears about a one-off GGUF conversion (llama.cpp decoder), which can take minutes.
    """
    import torch
    from transformers import AutoTokenizer, BitsAndBytesConfig, GenerationConfig
    from transformers.utils import logging as transformers_logging

    from .model.configuration_dots import DotsOCRConfig
    from .model.modeling_dots_ocr import DotsOCRForCausalLM
    from .inputs.preprocessing import ImagePreparer

    try:
        config = DotsOCRConfig.from_pretrained(folder)
    except Exception as exc:
        raise ModelUnavailableError(f"The checkpoint in {folder} has an unreadable config.json ({exc}).") from None
    transformers_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar; downloads keep theirs
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        preparer = ImagePreparer.from_pretrained(folder)
    except OSError as exc:
        raise ModelUnavailableError(f"The checkpoint in {folder} is incomplete ({exc}).") from None
    eos = _eos_ids(folder, tokenizer)
    memory = GpuMemory() if plan.device == "cuda" else None
    if plan.decoder == "llamacpp":
        from .decoders.llamacpp import load_llamacpp_decoder

        decoder = load_llamacpp_decoder(folder, precision=plan.precision, gguf_type=plan.gguf_type,
                                        device=plan.device, on_progress=on_progress)
        return LoadedModel(decoder=decoder, tokenizer=tokenizer, preparer=preparer, eos_token_ids=eos,
                           image_token_id=config.image_token_id, folder=folder, device=plan.device,
                           precision=plan.precision, memory=memory, gguf_type=plan.gguf_type)
    from .decoders.torch_decoder import TorchDecoder
    dtype = getattr(torch, DTYPE_NAMES[plan.precision])
    kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "device_map": {"": plan.device}}
    if plan.precision == "4bit":
        _require_bitsandbytes()
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float16,
            llm_int8_skip_modules=list(UNQUANTIZED_MODULES) + _unquantizable(config, plan.device))
    try:
        model = DotsOCRForCausalLM.from_pretrained(folder, **kwargs).eval()
    except torch.cuda.OutOfMemoryError:
        raise
    except OSError as exc:
        raise ModelUnavailableError(f"The checkpoint in {folder} is incomplete ({exc}).") from None
    # Only the stop ids come from the checkpoint's generation_config; its max_length (32768) would just fight
    # max_new_tokens, which the engine sets per call.
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[0], do_sample=False)
    return LoadedModel(decoder=TorchDecoder(model, plan.device, plan.precision), tokenizer=tokenizer,
                       preparer=preparer, eos_token_ids=eos, image_token_id=config.image_token_id, folder=folder,
                       device=plan.device, precision=plan.precision, memory=memory)


def _eos_ids(folder: Path, tokenizer) -> list[int]:
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
    except OSError:
        eos = None
    if eos is None:
        eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|endofassistant|>")]
    return [eos] if isinstance(eos, int) else list(eos)


def _unquantizable(config, device: str) -> list[str]:
    """Linear layers whose input width the CPU 4-bit kernel cannot take (never the case at the real sizes)."""
    if device != "cpu":
        return []
    import torch

    from .model.modeling_dots_ocr import DotsOCRForCausalLM

    with torch.device("meta"):
        skeleton = DotsOCRForCausalLM(config)
    return [name for name, module in skeleton.named_modules()
            if isinstance(module, torch.nn.Linear) and module.in_features % BNB_CPU_BLOCK]


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise PrecisionError("4-bit needs the bitsandbytes package: pip install \"bitsandbytes>=0.46\".") from None
