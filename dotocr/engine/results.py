"""What one OCR call returns, the same for the local and the remote engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class OCRResult:
    text: str
    """The answer in the requested output format (plain text, Markdown, or JSON cells as text)."""
    raw: str
    """What the model generated, before any conversion or trimming of a repeated tail."""
    prompt: str
    """The prompt mode: text, layout, layout-json or grounding."""
    stop_reason: str
    """eos (the model finished), max_new_tokens, repetition (the loop guard stopped a loop), or cancelled
    (the caller stopped it: a client that left, a deadline)."""
    width: int
    """Width of the input image as given, before any resizing."""
    height: int
    image_tokens: int
    prompt_tokens: int
    generated_tokens: int
    device: str
    precision: str
    decoder: str = "torch"
    """What generated the text: torch, llamacpp, or remote."""
    gguf_type: str | None = None
    """With the llama.cpp decoder: the GGUF weight type (f32, f16, q8_0, q4_k_m)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: preprocess, prefill (vision + prompt), decode, total; from the local engine also
    draft_tokens and accepted_tokens (speculative decoding: drafted tokens the model checked, and kept)."""
    peak_gpu_mb: float | None = None
    loop_start: int | None = None
    """With stop_reason "repetition": the index among the generated tokens where the loop began (else None)."""
    cells: list[dict[str, Any]] | None = None
    """Layout cells (bbox in input-image pixels, category, text) for the layout prompts."""
    file: str | None = None
    page: int | None = None
    """For a PDF page: its number, 1-based (width, height and any boxes are in that page's pixels)."""
    dpi: float | None = None
    """For a PDF page: what it was rendered at, so a box in its pixels is x * 72 / dpi points."""
    low_confidence: list[list[int]] | None = None
    """[start, end) character spans of `text` written by tokens the model gave less than even odds: where to look
    twice (`answers/confidence.py`). None where the engine cannot tell (a remote server without logprobs)."""
    source: str = "model"
    """Who answered: "model", "barcode" (only QR codes or bar codes showed: zxing-cpp answered, the model was neither
    loaded nor asked; decoder "zxing-cpp", no tokens) or "barcode+model" (the codes' contents come first in text)."""
    codes: list[dict[str, Any]] | None = None
    """The QR codes and bar codes found (text, format as zxing-cpp names it: QRCode, EAN13, ..., bbox in input-image
    pixels), top to bottom; absent when there were none."""
    pieces: list[tuple[str, float]] = field(default_factory=list, metadata={"json": False})
    """(text, probability) per generated token of the answer, for the OpenAI route's `logprobs`; not in the JSON."""

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON contract shared by `dotocr ocr --format json` and `POST /ocr`; page fields only for PDFs, codes
        only where some were found."""
        data = {name: value for name, value in asdict(self).items() if name in JSON_FIELDS}
        for optional in ("cells", "page", "dpi", "low_confidence", "codes"):
            if data[optional] is None:
                del data[optional]
        return data


JSON_FIELDS = tuple(item.name for item in fields(OCRResult) if item.metadata.get("json", True))
"""The fields of the JSON contract, in order (the server's /ocr schema is made from these)."""
