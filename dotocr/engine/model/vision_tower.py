"""The vision tower loaded alone, for a decoder that runs the language model elsewhere (llama.cpp), and its
optional int8 form.

Only the checkpoint's vision weights are read, so the decoder's 1.5 B weights are never held by torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ModelUnavailableError
from .spellings import vision_weight_name


def load_vision_tower(folder: Path, *, dtype: Any, device: str = "cpu") -> Any:
    """Our `DotsVisionTransformer` in `dtype` on `device`, from the checkpoint's vision weights only."""
    import torch
    from safetensors import safe_open

    from .configuration_dots import DotsOCRConfig, DotsVisionConfig
    from .modeling_dots_ocr import DotsVisionTransformer

    config = DotsOCRConfig.from_pretrained(folder)
    vision_config = config.vision_config
    if isinstance(vision_config, dict):
        vision_config = DotsVisionConfig(**vision_config)
    with torch.device("meta"):
        tower = DotsVisionTransformer(vision_config)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(file, framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                key = vision_weight_name(name)
                if key is not None:
                    state[key] = handle.get_tensor(name).to(device=device, dtype=dtype)
    if not state:
        raise ModelUnavailableError(f"The checkpoint in {folder} holds no vision tower weights; is it a dots.ocr "
                                    "checkpoint?")
    tower.load_state_dict(state, strict=True, assign=True)
    return tower.eval()


def int8_vision_tower(tower: Any) -> Any:
    """The tower with every Linear layer in dynamic int8 (`--vision-precision int8`, CPU only; measured, not the
    default: docs/performance.md, section 10). torch quantizes from fp32 weights; the patch conv and the norms
    stay fp32."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks its quantized tensors deprecated; the kernels are current
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(tower.float(), {torch.nn.Linear}, dtype=torch.qint8)
