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

from ..config import Settings
from ..errors import DotOCRError
from .addresses import is_loopback_url
from .base import Engine
from .documents import (
    DEFAULT_DPI,
    MAX_PAGE_PIXELS,
    DocumentError,
    Page,
    PdfDocument,
    check_dpi,
    is_pdf,
    parse_page_ranges,
)
from .images import MAX_INPUT_PIXELS, ImageInput, declared_png_size, load_image
from .inference import DotOCRInference
from .layout import FURNITURE, PICTURE_MODES, cells_to_markdown, picture_markdown
from .prompts import IMAGE_PLACEHOLDER, PROMPT_MODES, instruction_for, resolve_prompt, strip_image_placeholder
from .results import OCRResult
from .status import EngineState, Status

_LAZY = {
    "DotsOCRConfig": ".configuration_dots",
    "DotsVisionConfig": ".configuration_dots",
    "DotsOCRForCausalLM": ".modeling_dots_ocr",
    "RemoteEngine": ".remote",
}


def make_engine(settings: Settings, *, on_state: Callable[[EngineState], None] | None = None,
                **kwargs: Any) -> Engine:
    """The engine the settings ask for: in-process, or an OpenAI-compatible server elsewhere. Loads nothing."""
    if settings.engine == "remote":
        from .remote import RemoteEngine

        return RemoteEngine(settings, on_state=on_state, **kwargs)
    return DotOCRInference(settings, on_state=on_state, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        if name.startswith("Dots"):  # the model module registers the config classes with the Auto classes
            importlib.import_module(".modeling_dots_ocr", __name__)
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_DPI", "FURNITURE", "IMAGE_PLACEHOLDER", "MAX_INPUT_PIXELS", "MAX_PAGE_PIXELS", "PICTURE_MODES",
           "PROMPT_MODES", "DocumentError", "DotOCRError", "DotOCRInference", "DotsOCRConfig", "DotsOCRForCausalLM",
           "DotsVisionConfig", "Engine", "EngineState", "ImageInput", "OCRResult", "Page", "PdfDocument",
           "RemoteEngine", "Status", "cells_to_markdown", "check_dpi", "declared_png_size", "instruction_for",
           "is_loopback_url", "is_pdf", "load_image", "make_engine", "parse_page_ranges", "picture_markdown",
           "resolve_prompt", "strip_image_placeholder"]
