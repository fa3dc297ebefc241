"""`DotOCRInference`: one warm model shared by the tray, the command line and the HTTP server.

Callers hand in an image and get an `OCRResult`. Inside: one generation at a time on the model (others wait in
line), lazy loading, unload/reload, a CUDA out-of-memory retry at a smaller size, and a state that front ends
show (downloading, loading, ready, busy, error). Errors leave as `DotOCRError` with a sentence a person can act
on, and the next call works.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteriaList

from ..config import Settings
from ..errors import DotOCRError, ModelUnavailableError, OutOfMemoryError
from .base import Engine, EngineState
from .generation import DeltaStreamer, RepetitionGuard
from .layout import cells_to_markdown, map_cells_to_original, parse_cells
from .loading import LoadedModel, load_checkpoint, plan_load, resolve_checkpoint
from .preprocessing import ImageInput, PreparedImage, load_image
from .prompts import encode_prompt, instruction_for
from .results import OCRResult

log = logging.getLogger("dotocr.engine")

OOM_RETRY_SCALE = 0.7  # the retry after a CUDA out-of-memory error uses 70 % of the longest side


class DotOCRInference(Engine):
    """Thread-safe; construct once per process. Nothing loads until `load()` or the first `ocr()`."""

    def __init__(self, settings: Settings, *, on_state: Callable[[EngineState], None] | None = None,
                 max_waiting: int | None = None) -> None:
        super().__init__(settings, on_state=on_state, max_waiting=max_waiting)
        self._loaded: LoadedModel | None = None
        self._model_lock = threading.RLock()
        self._idle_timer: threading.Timer | None = None

    # -- state ------------------------------------------------------------------------------------------

    @property
    def device(self) -> str | None:
        return self._loaded.device if self._loaded else None

    @property
    def precision(self) -> str | None:
        return self._loaded.precision if self._loaded else None

    # -- lifecycle --------------------------------------------------------------------------------------

    def load(self) -> None:
        with self._model_lock:
            self._ensure_loaded()

    def unload(self) -> None:
        """Drop the model and give its memory back; the next call loads it again."""
        with self._model_lock:
            self._cancel_idle_timer()
            was_loaded = self._loaded is not None
            self._loaded = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if was_loaded or self._state.status != "error":
                self._set_state("unloaded", "model unloaded; it loads again on the next capture")

    def reconfigure(self, settings: Settings) -> None:
        """Take new settings; a model, device or precision change unloads now and reloads on the next call."""
        with self._model_lock:
            old, self._settings = self._settings, settings
            if (old.model, old.device, old.precision) != (settings.model, settings.device, settings.precision):
                self.unload()

    def _ensure_loaded(self) -> LoadedModel:
        if self._loaded is not None:
            return self._loaded
        settings = self._settings
        try:
            plan = plan_load(settings)
            local = Path(settings.model).expanduser().is_dir()
            self._set_state("loading" if local else "downloading", f"getting {settings.model}")
            folder = resolve_checkpoint(
                settings.model,
                on_progress=lambda p: self._set_state("downloading", f"downloading {settings.model}", p))
            self._set_state("loading", f"loading {folder.name} ({plan.precision} on {plan.device})")
            log.info("Loading %s in %s on %s: %s", folder, plan.precision, plan.device, plan.reason)
            started = time.perf_counter()
            self._loaded = load_checkpoint(folder, plan)
            log.info("Model ready in %.1f s", time.perf_counter() - started)
        except DotOCRError as exc:
            self._set_state("error", str(exc))
            raise
        except torch.cuda.OutOfMemoryError:
            self._free_cuda()
            error = OutOfMemoryError(
                f"The GPU has too little free memory to load the model in {plan.precision}; close other GPU "
                "programs or choose a smaller precision (4bit) or the CPU.")
            self._set_state("error", str(error))
            raise error from None
        except Exception as exc:  # anything else from transformers/safetensors: make it one sentence
            error = ModelUnavailableError(f"Loading the model {settings.model} failed: {_one_line(exc)}")
            self._set_state("error", str(error))
            raise error from None
        self._set_state("ready", f"{plan.precision} on {plan.device}")
        return self._loaded

    # -- OCR --------------------------------------------------------------------------------------------

    def ocr(self, image: ImageInput, *, prompt: str | None = None, output_format: str | None = None,
            bbox: tuple[float, float, float, float] | None = None, max_new_tokens: int | None = None,
            temperature: float = 0.0, top_p: float = 1.0, instruction: str | None = None,
            on_text: Callable[[str], None] | None = None, file: str | None = None) -> OCRResult:
        """Read one image. `output_format="markdown"` without a prompt picks the layout prompt (tables, formulas)."""
        started = time.perf_counter()
        picture = load_image(image)  # outside the queue: a bad file fails at once
        prompt = self._resolve_prompt(prompt, output_format, bbox, instruction)
        with self._queue_slot(), self._model_lock:
            self._cancel_idle_timer()
            loaded = self._ensure_loaded()
            self._set_state("busy", "reading")
            try:
                return self._ocr_with_retry(loaded, picture, started, prompt=prompt, bbox=bbox,
                                            max_new_tokens=max_new_tokens or self._settings.max_new_tokens,
                                            temperature=temperature, top_p=top_p, instruction=instruction,
                                            on_text=on_text, file=file)
            finally:
                if self._loaded is not None:
                    self._set_state("ready", f"{loaded.precision} on {loaded.device}")
                self._schedule_idle_unload()

    def _ocr_with_retry(self, loaded: LoadedModel, picture, started: float, **kwargs: Any) -> OCRResult:
        max_size = self._settings.max_image_size
        on_text, streamed = kwargs.pop("on_text"), []

        def forward(text: str) -> None:
            streamed.append(text)
            on_text(text)

        kwargs["on_text"] = forward if on_text is not None else None
        try:
            return self._run(loaded, picture, started, max_size, **kwargs)
        except torch.cuda.OutOfMemoryError:
            self._free_cuda()
            if streamed:  # a listener already has part of the answer: a retry would repeat it
                raise OutOfMemoryError(
                    f"The GPU ran out of memory while reading; lower --max-image-size (now {max_size}) or "
                    "switch to 4-bit or the CPU.") from None
        smaller = max(28, int(min(max_size, max(picture.size)) * OOM_RETRY_SCALE))
        log.warning("CUDA out of memory; retrying once at %d px", smaller)
        try:
            return self._run(loaded, picture, started, smaller, **kwargs)
        except torch.cuda.OutOfMemoryError:
            self._free_cuda()
            raise OutOfMemoryError(
                f"The GPU ran out of memory even at {smaller} px; lower --max-image-size (now {max_size}) or "
                "switch to 4-bit or the CPU.") from None

    def _run(self, loaded: LoadedModel, picture, started: float, max_size: int, *, prompt: str,
             bbox, max_new_tokens: int, temperature: float, top_p: float, instruction: str | None,
             on_text, file: str | None) -> OCRResult:
        prepared = loaded.preparer.prepare(picture, max_size)
        if instruction is None:
            instruction = instruction_for(prompt, prepared.box_to_model(bbox) if bbox is not None else None)
        ids = encode_prompt(loaded.tokenizer, instruction, prepared.image_tokens)
        device = loaded.device
        input_ids = torch.tensor([ids], device=device)
        guard = RepetitionGuard(len(ids), loaded.eos_token_ids)
        streamer = DeltaStreamer(loaded.tokenizer, on_text)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
            "do_sample": False}
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        prepared_at = time.perf_counter()
        with torch.inference_mode():
            output = loaded.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids),
                pixel_values=prepared.pixel_values.to(device), image_grid_thw=prepared.grid_thw.to(device),
                max_new_tokens=max_new_tokens, stopping_criteria=StoppingCriteriaList([guard]), streamer=streamer,
                **sampling)
        finished = time.perf_counter()
        new_tokens = output[0, len(ids):].tolist()
        stop_reason, kept = self._stop_reason(new_tokens, guard, loaded.eos_token_ids, max_new_tokens)
        loop_start = guard.guard.loop_start if stop_reason == "repetition" and guard.guard else None
        tokenizer = loaded.tokenizer
        raw = tokenizer.decode(new_tokens, skip_special_tokens=True)
        text = tokenizer.decode(kept, skip_special_tokens=True)
        text, cells = format_output(prompt, text, prepared)
        first = streamer.first_token_time or finished
        return OCRResult(
            text=text, raw=raw, prompt=prompt, stop_reason=stop_reason,
            width=prepared.original_size[0], height=prepared.original_size[1],
            image_tokens=prepared.image_tokens, prompt_tokens=len(ids), generated_tokens=len(new_tokens),
            device=loaded.device, precision=loaded.precision,
            timings={"preprocess": round(prepared_at - started, 4), "prefill": round(first - prepared_at, 4),
                     "decode": round(finished - first, 4), "total": round(finished - started, 4)},
            peak_gpu_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
            cells=cells, file=file, loop_start=loop_start)

    @staticmethod
    def _stop_reason(tokens: list[int], guard: RepetitionGuard, eos: list[int],
                     max_new_tokens: int) -> tuple[str, list[int]]:
        if guard.guard is not None and guard.guard.triggered:
            return "repetition", guard.guard.keep(tokens)
        if tokens and tokens[-1] in eos:
            return "eos", tokens[:-1]
        if len(tokens) >= max_new_tokens:
            return "max_new_tokens", tokens
        return "eos", tokens

    # -- housekeeping ------------------------------------------------------------------------------------

    def _free_cuda(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _schedule_idle_unload(self) -> None:
        minutes = self._settings.idle_minutes
        if minutes <= 0 or self._loaded is None:
            return
        self._cancel_idle_timer()
        self._idle_timer = threading.Timer(minutes * 60, self._idle_unload)
        self._idle_timer.daemon = True
        self._idle_timer.start()

    def _idle_unload(self) -> None:
        if self._model_lock.acquire(blocking=False):
            try:
                if self._waiting == 0:
                    log.info("Unloading the model after %d idle minutes", self._settings.idle_minutes)
                    self.unload()
            finally:
                self._model_lock.release()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


def format_output(prompt: str, text: str, prepared: PreparedImage) -> tuple[str, list[dict] | None]:
    """The answer as the prompt mode promises it: plain text, Markdown from layout cells, or the cells as JSON."""
    if prompt not in ("layout", "layout-json"):
        return text.strip(), None
    cells, _complete = parse_cells(text)
    cells = map_cells_to_original(cells, prepared)
    if prompt == "layout-json":
        return json.dumps(cells, ensure_ascii=False), cells
    return (cells_to_markdown(cells) if cells else text.strip()), cells


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
