"""The inference engine: the native dots.ocr model and everything between an image and its text.

Importing this package registers `dots_ocr` with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(folder)` returns our implementation and never runs checkpoint code.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from ..config import Settings
from ..errors import DotOCRError
from .base import Engine, EngineState
from .configuration_dots import DotsOCRConfig, DotsVisionConfig
from .gguf_export import GGUF_TYPES, convert_gguf
from .inference import DotOCRInference
from .modeling_dots_ocr import DotsOCRForCausalLM
from .results import OCRResult

AutoConfig.register(DotsOCRConfig.model_type, DotsOCRConfig, exist_ok=True)
AutoConfig.register(DotsVisionConfig.model_type, DotsVisionConfig, exist_ok=True)
AutoModelForCausalLM.register(DotsOCRConfig, DotsOCRForCausalLM, exist_ok=True)


def make_engine(settings: Settings, **kwargs):
    """The engine the settings ask for: in-process, or an OpenAI-compatible server elsewhere."""
    if settings.engine == "remote":
        from .remote import RemoteEngine

        return RemoteEngine(settings, **kwargs)
    return DotOCRInference(settings, **kwargs)


__all__ = ["GGUF_TYPES", "DotOCRError", "DotOCRInference", "Engine", "DotsOCRConfig", "DotsOCRForCausalLM",
           "DotsVisionConfig", "EngineState", "OCRResult", "convert_gguf", "make_engine"]
