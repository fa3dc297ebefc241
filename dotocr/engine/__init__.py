"""The inference engine's public face: everything a front end needs, and nothing heavy.

Front ends (cli, server, tray) import only these names. Importing them costs no torch and no transformers:
the local model code is imported when a local model is loaded. The model classes themselves
(`DotsOCRForCausalLM`, `DotsOCRConfig`, `DotsVisionConfig`) are reachable here too, imported on first access;
importing them registers `dots_ocr` with transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained`
returns our implementation and never runs checkpoint code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..config import GGUF_TYPES, Settings
from ..errors import DotOCRError
from .answers.forms import AnswerForms, answer_forms
from .answers.markdown import FURNITURE, PICTURE_MODES, MarkdownStyle
from .base import Engine
from .checkpoint import CheckpointInfo, describe_checkpoint, is_dots_mocr
from .gguf.convert import cached_gguf_problem, convert_gguf, gguf_path
from .inputs.boxes import Box, check_box, parse_box
from .inputs.documents import (
    DEFAULT_DPI,
    MAX_PAGE_PIXELS,
    DocumentError,
    Page,
    PdfDocument,
    RenderLimits,
    RenderStopped,
    check_dpi,
    describe_pages,
    is_pdf,
    parse_page_ranges,
)
from .inputs.images import MAX_INPUT_PIXELS, ImageInput, declared_png_size, load_image
from .inputs.preprocessing import preparation_bytes
from .inputs.prompts import IMAGE_PLACEHOLDER, PROMPT_MODES, instruction_for, resolve_prompt, strip_image_placeholder
from .llamacpp_runtime import INSTALL_HINT as LLAMACPP_INSTALL_HINT
from .llamacpp_runtime import describe_llamacpp
from .plan import LoadPlan, PrecisionError, cpu_prefers_bf16, describe_cuda, plan_load
from .results import OCRResult
from .status import LOADING_STATUSES, EngineState, Status

_LAZY = {
    "DotOCRInference": ".inference",  # not needed by a front end that talks to a server: `dotocr ocr` when warm
    "DotsOCRConfig": ".model.configuration_dots",
    "DotsVisionConfig": ".model.configuration_dots",
    "DotsOCRForCausalLM": ".model.modeling_dots_ocr",
    "RemoteEngine": ".remote",
}


def make_engine(settings: Settings, *, on_state: Callable[[EngineState], None] | None = None,
                **kwargs: Any) -> Engine:
    """The engine the settings ask for: in-process, or an OpenAI-compatible server elsewhere. Loads nothing."""
    if settings.engine == "remote":
        from .remote import RemoteEngine

        return RemoteEngine(settings, on_state=on_state, **kwargs)
    from .inference import DotOCRInference

    return DotOCRInference(settings, on_state=on_state, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        if name.startswith("Dots"):  # the model module registers the config classes with the Auto classes
            importlib.import_module(".model.modeling_dots_ocr", __name__)
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_DPI", "FURNITURE", "GGUF_TYPES", "IMAGE_PLACEHOLDER", "LLAMACPP_INSTALL_HINT",
           "LOADING_STATUSES", "MAX_INPUT_PIXELS", "MAX_PAGE_PIXELS", "PICTURE_MODES", "PROMPT_MODES", "Box",
           "CheckpointInfo", "DocumentError", "DotOCRError", "DotOCRInference", "DotsOCRConfig",
           "DotsOCRForCausalLM", "DotsVisionConfig", "Engine", "EngineState", "ImageInput", "LoadPlan",
           "MarkdownStyle", "OCRResult", "Page", "PdfDocument", "PrecisionError", "RemoteEngine", "RenderLimits",
           "RenderStopped", "Status", "cached_gguf_problem", "check_box", "check_dpi", "convert_gguf",
           "cpu_prefers_bf16", "declared_png_size", "describe_checkpoint", "describe_cuda", "describe_llamacpp",
           "describe_pages", "gguf_path", "instruction_for", "is_pdf", "load_image", "make_engine", "parse_box",
           "parse_page_ranges", "plan_load", "preparation_bytes", "resolve_prompt", "strip_image_placeholder"]
__all__ += ["AnswerForms", "answer_forms", "is_dots_mocr"]  # the answer's forms (clipboard, result window)
