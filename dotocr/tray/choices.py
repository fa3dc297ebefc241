"""The tray menu's radio items (precision, output) and which of them what actually runs checks.

Output items stand for a prompt: dots.mocr's own prompts (web page, scene text, SVG, a general description) are
shown only where the model is dots.mocr (`dotocr.engine.is_dots_mocr`: by its name), and with dots.mocr the
tray's default output follows its model card: document parsing with the layout prompt, as Markdown.

A precision item stands for what runs, so it is matched against the engine's resolved device and precision,
never against the requested strings: `auto` that resolved to 4-bit checks "4-bit GPU", and the 16-bit item
says BF16 or FP16, whichever the GPU really runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dotocr.config import Settings
from dotocr.engine import is_dots_mocr

PRECISION_KEYS = ("4bit", "16bit", "cpu")
GPU_KEYS = frozenset({"4bit", "16bit"})

OUTPUT_CHOICES = {
    # menu key: (label, prompt mode, output format); Markdown uses the layout prompt for tables and formulas
    "text": ("Plain text", "text", "text"),
    "markdown": ("Markdown", "layout", "markdown"),
    # dots.mocr's prompts
    "web": ("Web page (Markdown)", "web", "markdown"),
    "scene-text": ("Scene text", "scene-text", "text"),
    "svg": ("Picture as SVG", "svg", "text"),
    "general": ("Describe the picture", "general", "text"),
}
MOCR_OUTPUT_KEYS = ("web", "scene-text", "svg", "general")
MOCR_DEFAULT_OUTPUT = "markdown"
"""dots.mocr's model card parses documents with prompt_layout_all_en (its Hugging Face example, its parser's
default, the first of its demos): our layout prompt, as Markdown."""


@dataclass(frozen=True)
class CudaFacts:
    """What this machine's GPU can do, as far as the precision items care."""

    available: bool
    bf16: bool = False


def precision_key(device: str | None, precision: str | None) -> str | None:
    """The item a resolved plan (or an explicit request) checks; None for a plan no item stands for."""
    if device == "cpu":
        return "cpu"
    if device == "cuda" and precision == "4bit":
        return "4bit"
    if device == "cuda" and precision in ("bf16", "fp16"):
        return "16bit"
    return None


def requested_key(settings: Settings) -> str | None:
    """The item an explicit request checks before it runs (a switch the engine has not made yet); None
    while `auto` still has to decide."""
    if settings.device == "cpu":
        return "cpu"
    if settings.device == "cuda" and settings.precision != "auto":
        return precision_key(settings.device, settings.precision)
    return None


def precision_target(key: str, cuda: CudaFacts | None) -> tuple[str, str]:
    """The (device, precision) settings a click on `key` asks for: 16-bit is bf16 where the GPU has it."""
    if key == "4bit":
        return "cuda", "4bit"
    if key == "16bit":
        return "cuda", "bf16" if cuda is not None and cuda.bf16 else "fp16"
    return "cpu", "auto"  # the engine measures whether bf16 or fp32 is faster on this CPU


def precision_label(key: str, half: str | None = None) -> str:
    """The item's words; `half` is the 16-bit type that runs or would run ("bf16", "fp16"), if known."""
    if key == "4bit":
        return "4-bit GPU"
    if key == "16bit":
        return f"{half.upper()} GPU" if half else "16-bit GPU"
    return "CPU"


def output_key(settings: Settings) -> str:
    """The checked Output item: the one whose prompt the settings ask for (plain text for any other prompt)."""
    for key, (_label, prompt, _output_format) in OUTPUT_CHOICES.items():
        if prompt == settings.prompt:
            return key
    return "text"


def runs_dots_mocr(settings: Settings) -> bool:
    """The model the settings name is dots.mocr: the local checkpoint, or the remote server's model name."""
    return is_dots_mocr(settings.model) or (settings.engine == "remote" and is_dots_mocr(settings.remote_model))


def output_keys(settings: Settings) -> tuple[str, ...]:
    """The Output items shown: dots.mocr's prompts only with dots.mocr."""
    shown = tuple(key for key in OUTPUT_CHOICES if key not in MOCR_OUTPUT_KEYS)
    return shown + MOCR_OUTPUT_KEYS if runs_dots_mocr(settings) else shown


def model_card_defaults(settings: Settings, sources: Mapping[str, str]) -> dict[str, str]:
    """This run's prompt and output format where nobody chose them (`sources` says "default", see
    `dotocr.config.setting_sources`) and the model is dots.mocr: its model card's document parsing. Applied as a
    run value, never written to the file; a menu choice replaces it."""
    chosen = any(sources.get(key, "default") != "default" for key in ("prompt", "output_format"))
    if chosen or not runs_dots_mocr(settings):
        return {}
    _label, prompt, output_format = OUTPUT_CHOICES[MOCR_DEFAULT_OUTPUT]
    return {"prompt": prompt, "output_format": output_format}
