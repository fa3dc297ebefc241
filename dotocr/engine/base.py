"""What every engine shares, local or remote: settings, the state front ends show, and the one request path.

Front ends program against this surface only: `load`, `unload`, `reconfigure`, `ocr`, `state`, `device`,
`precision`. `ocr` is a template: the image is loaded and the call resolved here (`Call`), QR codes and bar codes
are read (`inputs.codes`: a crop that is only codes is answered without the model), each engine generates in its
own `_generate`, and the answer is formatted and timed here, so both engines take the same arguments and return
the same `OCRResult`. Waiting rooms and deadlines belong to the caller (the server has
its own gate); an engine runs one generation at a time and callers simply wait on its lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Settings
from .answers.confidence import Piece, low_confidence_spans
from .answers.formatting import PLAIN, format_answer, with_codes
from .answers.markdown import MarkdownStyle
from .inputs.codes import NO_CODES, CodeReading, read_codes
from .inputs.images import ImageInput, load_image
from .inputs.prompts import instruction_for, resolve_prompt, system_for
from .results import OCRResult
from .status import EngineState, Status

if TYPE_CHECKING:
    from PIL import Image

    from .inputs.preprocessing import PreparedImage

log = logging.getLogger("dotocr.engine")

CODES_NOT_READ = ("grounding", "layout-json", "svg")
"""Prompts whose answer is no place for codes: a box was asked, or the answer must stay JSON or SVG."""


@dataclass(frozen=True)
class Call:
    """One OCR call, resolved: the prompt mode chosen, the settings' defaults filled in."""

    prompt: str
    """The prompt mode: text, layout, layout-json or grounding."""
    bbox: tuple[float, float, float, float] | None
    """For grounding: the box in input pixels."""
    instruction: str | None
    """The caller's own instruction, or None for the prompt mode's official one."""
    system: str | None
    max_new_tokens: int
    max_image_size: int
    """0: no cap, dots.ocr's own sizing alone."""
    temperature: float
    top_p: float
    max_prompt_tokens: int | None
    on_text: Callable[[str], None] | None
    should_stop: Callable[[], bool] | None

    def instruction_for(self, prepared: PreparedImage) -> str:
        """The instruction the model reads: the caller's, or the official one with the box in model pixels."""
        if self.instruction is not None:
            return self.instruction
        return instruction_for(self.prompt, prepared.box_to_model(self.bbox) if self.bbox is not None else None,
                               prepared.original_size)


@dataclass
class Generated:
    """What an engine's `_generate` hands back: the model's text and the facts of the run."""

    prepared: PreparedImage
    raw: str
    """Everything generated."""
    kept: str
    """What the answer keeps: the text before a loop, plus one copy of its block."""
    stop_reason: str
    prompt_tokens: int
    generated_tokens: int
    prepared_at: float
    """time.perf_counter() when the image was sized (and, locally, cut into patches)."""
    first_token_at: float
    finished_at: float
    device: str
    precision: str
    decoder: str
    gguf_type: str | None = None
    loop_start: int | None = None
    peak_gpu_mb: float | None = None
    tokens: list[int] = field(default_factory=list)
    """The kept tokens: what `kept` decodes from (empty where the engine does not see tokens: remote)."""
    token_probabilities: list[float] = field(default_factory=list)
    """The probability the model gave each of `tokens` when it wrote it (softmax of that step's logits, the
    verified distribution under speculative decoding), same order: low values mark where it was unsure."""
    draft_tokens: int | None = None
    """Speculative decoding: drafted tokens the model checked (None where the engine does not draft: remote)."""
    accepted_tokens: int | None = None
    """... and those of them it kept."""
    pieces: list[Piece] | None = None
    """(text, probability) per kept token, adding up to `kept`; None where the engine cannot tell (a remote server
    that sends no logprobs)."""


class Engine:
    """Subclasses implement `load`, `unload`, `reconfigure` and `_generate`; they report through `_set_state`."""

    def __init__(self, settings: Settings, *, on_state: Callable[[EngineState], None] | None = None) -> None:
        self._settings = settings
        self._on_state = on_state
        self._state = EngineState(Status.UNLOADED)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def device(self) -> str | None:
        return self._state.device

    @property
    def precision(self) -> str | None:
        return self._state.precision

    def load(self) -> None:
        raise NotImplementedError

    def unload(self) -> None:
        raise NotImplementedError

    def reconfigure(self, settings: Settings) -> None:
        raise NotImplementedError

    def ocr(self, image: ImageInput, *, prompt: str | None = None, output_format: str | None = None,
            bbox: tuple[float, float, float, float] | None = None, max_new_tokens: int | None = None,
            temperature: float = 0.0, top_p: float = 1.0, instruction: str | None = None,
            on_text: Callable[[str], None] | None = None, file: str | None = None,
            should_stop: Callable[[], bool] | None = None, max_prompt_tokens: int | None = None,
            max_image_size: int | None = None, system: str | None = None,
            markdown: MarkdownStyle = PLAIN, codes: bool | None = None) -> OCRResult:
        """Read one image. Left out, `prompt` and `output_format` are the settings' (Markdown output picks the layout
        prompt: tables, formulas).

        `on_text` gets the answer as it is written. `should_stop` is asked after every token (or streamed piece);
        when it answers True the generation ends with stop_reason "cancelled" (a client that left, a deadline).
        `max_prompt_tokens` caps the prompt's text tokens, the image's not counted (a remote server counts with
        its own tokenizer). `max_image_size` overrides the setting for this call (0: no cap). `system` is a
        system turn rendered before the user turn, as the checkpoint's chat template does (left out, the prompt
        mode's own: dots.mocr's general prompt has one). `markdown` says how layout cells become Markdown (page
        furniture, pictures). `codes` overrides the `barcodes` setting for this call (the OpenAI route passes
        False: it answers as vLLM would).
        """
        started = time.perf_counter()
        picture = load_image(image)  # before any lock or network: a bad file fails at once
        mode = resolve_prompt(prompt, output_format=output_format or self._settings.output_format, bbox=bbox,
                              instruction=instruction, default=self._settings.prompt)
        call = Call(
            prompt=mode, bbox=bbox, instruction=instruction,
            system=system if system is not None or instruction is not None else system_for(mode),
            max_new_tokens=max_new_tokens or self._settings.max_new_tokens,
            max_image_size=self._settings.max_image_size if max_image_size is None else max_image_size,
            temperature=temperature, top_p=top_p, max_prompt_tokens=max_prompt_tokens, on_text=on_text,
            should_stop=should_stop)
        reading = read_codes(picture) if self._reads_codes(call, codes) else NO_CODES
        if reading.alone:
            return _codes_only(reading, picture, call, started, file)
        if reading.codes and on_text is not None:
            on_text(with_codes("", reading.text))
        run = self._generate(picture, call)
        text, cells = format_answer(call.prompt, run.kept, run.prepared, picture, markdown)
        width, height = run.prepared.original_size
        timings = {"preprocess": round(run.prepared_at - started, 4),
                   "prefill": round(run.first_token_at - run.prepared_at, 4),
                   "decode": round(run.finished_at - run.first_token_at, 4),
                   "total": round(time.perf_counter() - started, 4)}
        if run.draft_tokens is not None:
            timings.update(draft_tokens=run.draft_tokens, accepted_tokens=run.accepted_tokens or 0)
        answer = with_codes(text, reading.text)
        unsure = None if run.pieces is None else low_confidence_spans(run.pieces, run.kept, text, call.prompt)
        return OCRResult(
            text=answer, raw=run.raw, prompt=call.prompt, stop_reason=run.stop_reason,
            width=width, height=height,
            image_tokens=run.prepared.image_tokens, prompt_tokens=run.prompt_tokens,
            generated_tokens=run.generated_tokens, device=run.device, precision=run.precision,
            decoder=run.decoder, gguf_type=run.gguf_type,
            timings=timings,
            peak_gpu_mb=run.peak_gpu_mb, loop_start=run.loop_start, cells=cells, file=file,
            source="barcode+model" if reading.codes else "model",
            codes=[code.to_json_dict() for code in reading.codes] or None,
            low_confidence=None if unsure is None else _shifted(unsure, len(answer) - len(text)),
            pieces=run.pieces or [])

    def _reads_codes(self, call: Call, codes: bool | None) -> bool:
        """Codes are read unless switched off, and only where the answer is text: not for a box (grounding), nor
        for answers that must stay JSON (layout-json) or SVG."""
        wanted = self._settings.barcodes if codes is None else codes
        return wanted and call.prompt not in CODES_NOT_READ

    def _generate(self, picture: Image.Image, call: Call) -> Generated:
        """Size `picture`, run the model on it as `call` says, and report what came back."""
        raise NotImplementedError

    def _set_state(self, status: Status, detail: str = "", progress: float | None = None, *,
                   device: str | None = None, precision: str | None = None, decoder: str | None = None,
                   gguf_type: str | None = None) -> None:
        self._state = EngineState(Status(status), detail, progress, device, precision, decoder, gguf_type)
        if self._on_state is not None:
            try:
                self._on_state(self._state)
            except Exception:  # a front end's display problem must never break inference
                log.exception("state callback failed")


def _codes_only(reading: CodeReading, picture: Image.Image, call: Call, started: float, file: str | None
                ) -> OCRResult:
    """The answer for a crop that is only codes: zxing-cpp's, with no model loaded or asked."""
    if call.on_text is not None:
        call.on_text(reading.text)
    total = time.perf_counter() - started
    return OCRResult(
        text=reading.text, raw="", prompt=call.prompt, stop_reason="eos", width=picture.width,
        height=picture.height, image_tokens=0, prompt_tokens=0, generated_tokens=0, device="cpu", precision="none",
        decoder="zxing-cpp", timings={"preprocess": round(total - reading.seconds, 4), "prefill": 0.0,
                                      "decode": round(reading.seconds, 4), "total": round(total, 4)},
        file=file, source="barcode", codes=[code.to_json_dict() for code in reading.codes])


__all__ = ["CODES_NOT_READ", "Call", "Engine", "Generated"]


def _shifted(spans: list[list[int]], by: int) -> list[list[int]]:
    """Spans of the model's text moved to where it sits in the result's (after any codes' contents)."""
    return [[start + by, end + by] for start, end in spans]
