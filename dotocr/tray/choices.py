"""The tray menu's radio items (precision, output) and which of them what actually runs checks.

A precision item stands for what runs, so it is matched against the engine's resolved device and precision,
never against the requested strings: `auto` that resolved to 4-bit checks "4-bit GPU", and the 16-bit item
says BF16 or FP16, whichever the GPU really runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dotocr.config import Settings

PRECISION_KEYS = ("4bit", "16bit", "cpu")
GPU_KEYS = frozenset({"4bit", "16bit"})

OUTPUT_CHOICES = {
    # menu key: (label, prompt mode, output format); Markdown uses the layout prompt for tables and formulas
    "text": ("Plain text", "text", "text"),
    "markdown": ("Markdown", "layout", "markdown"),
}


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
    return "markdown" if settings.prompt == "layout" else "text"
