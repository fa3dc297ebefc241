"""`DotOCRInference`: one warm local model shared by the tray, the command line and the HTTP server.

Callers hand in an image and get an `OCRResult`. Inside: one generation at a time (others wait on the lock),
lazy loading, unload/reload, a CUDA out-of-memory retry at a smaller size, and a state that front ends show.
Errors leave as `DotOCRError` with a sentence a person can act on, and the next call works.

Importing this module is light: torch, transformers and the model code are imported by `loading` when a model
is loaded, so a front end can build the engine at once and load it in the background.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import DotOCRError, ModelUnavailableError, OutOfMemoryError, PromptTooLongError, one_line
from ..vision_grid import IMAGE_FACTOR
from .base import Call, Engine, Generated
from .checkpoint import resolve_checkpoint
from .decoders.base import DecodeRequest
from .decoders.generation import TokenPipeline, token_pieces
from .decoders.speculation import Drafter, seed_for
from .inputs.prompts import encode_prompt
from .loading import LoadedModel, load_checkpoint
from .plan import plan_load, speculates
from .status import EngineState, Status

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("dotocr.engine")

OOM_RETRY_SCALE = 0.7  # the retry after a CUDA out-of-memory error uses 70 % of the longest side


class DotOCRInference(Engine):
    """Thread-safe; construct once per process. Nothing loads until `load()` or the first `ocr()`."""

    def __init__(self, settings: Settings, *, on_state: Callable[[EngineState], None] | None = None) -> None:
        super().__init__(settings, on_state=on_state)
        self._loaded: LoadedModel | None = None
        self._model_lock = threading.RLock()
        self._idle_timer: threading.Timer | None = None
        self._callers = 0  # inside `ocr`, waiting or running: the idle unload leaves them alone
        self._callers_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------------

    def load(self) -> None:
        with self._model_lock:
            self._ensure_loaded()

    def unload(self) -> None:
        """Drop the model and give its memory back; the next call loads it again."""
        with self._model_lock:
            self._cancel_idle_timer()
            loaded, self._loaded = self._loaded, None
            if loaded is not None:
                loaded.decoder.close()
                del loaded
            _free_memory()
            if self._state.status != Status.ERROR or self._state.device:
                self._set_state(Status.UNLOADED, "model unloaded; it loads again on the next capture")

    def reconfigure(self, settings: Settings) -> None:
        """Take new settings; a change of what would run unloads now and reloads on the next call.

        What runs is compared as resolved plans, not as requested strings: `auto` that resolved to 4-bit and an
        explicit `4bit` are the same model, and switching between them reloads nothing.
        """
        with self._model_lock:
            old, self._settings = self._settings, settings
            if self._loaded is None:
                return
            if old.model != settings.model or old.vision_precision != settings.vision_precision:
                self.unload()
                return
            try:
                plan = plan_load(settings)
            except DotOCRError:
                self.unload()
                return
            precision = plan.precision
            if settings.precision == "auto" and old.precision == "auto" and settings.device == old.device:
                # Free GPU memory now excludes our own loaded model, so `auto` would re-plan smaller.
                precision = self._loaded.precision
            loaded = self._loaded
            if (plan.device, precision, plan.decoder, plan.gguf_type) != (
                    loaded.device, loaded.precision, loaded.decoder.name, loaded.gguf_type):
                self.unload()

    def _ensure_loaded(self) -> LoadedModel:
        if self._loaded is not None:
            return self._loaded
        settings = self._settings
        plan = None
        try:
            plan = plan_load(settings)
            local = Path(settings.model).expanduser().is_dir()
            self._set_state(Status.LOADING if local else Status.DOWNLOADING, f"getting {settings.model}")
            folder = resolve_checkpoint(
                settings.model,
                on_progress=lambda p: self._set_state(Status.DOWNLOADING, f"downloading {settings.model}", p))
            self._set_state(Status.LOADING, f"loading {folder.name} ({plan.precision} on {plan.device})")
            log.info("Loading %s in %s on %s: %s", folder, plan.precision, plan.device, plan.reason)
            started = time.perf_counter()
            self._loaded = load_checkpoint(folder, plan, on_progress=lambda p: self._set_state(
                Status.LOADING, f"writing the llama.cpp {plan.gguf_type} weights of {folder.name} (once)", p))
            log.info("Model ready in %.1f s", time.perf_counter() - started)
        except DotOCRError as exc:
            self._set_state(Status.ERROR, str(exc))
            raise
        except Exception as exc:
            if _is_cuda_oom(exc):
                _free_memory()
                precision = plan.precision if plan else settings.precision
                error: DotOCRError = OutOfMemoryError(
                    f"The GPU has too little free memory to load the model in {precision}; close other GPU "
                    "programs or choose a smaller precision (4bit) or the CPU.")
            else:  # anything else from transformers/safetensors: make it one sentence
                error = ModelUnavailableError(f"Loading the model {settings.model} failed: {one_line(exc)}")
            self._set_state(Status.ERROR, str(error))
            raise error from None
        self._set_ready()
        return self._loaded

    def _set_ready(self) -> None:
        loaded = self._loaded
        assert loaded is not None
        self._set_state(Status.READY, f"{loaded.precision} on {loaded.device}", device=loaded.device,
                        precision=loaded.precision, decoder=loaded.decoder.name, gguf_type=loaded.gguf_type)

    # -- OCR --------------------------------------------------------------------------------------------

    def _generate(self, picture: Image.Image, call: Call) -> Generated:
        with self._callers_lock:
            self._callers += 1
        try:
            with self._model_lock:
                self._cancel_idle_timer()
                loaded = self._ensure_loaded()
                self._set_state(Status.BUSY, "reading", device=loaded.device, precision=loaded.precision,
                                decoder=loaded.decoder.name, gguf_type=loaded.gguf_type)
                try:
                    return self._generate_with_retry(loaded, picture, call)
                finally:
                    if self._loaded is not None:
                        self._set_ready()
                    self._schedule_idle_unload()
        finally:
            with self._callers_lock:
                self._callers -= 1

    def _generate_with_retry(self, loaded: LoadedModel, picture: Image.Image, call: Call) -> Generated:
        """One try at the call's size; after a CUDA out-of-memory error, one more at 70 % of the longest side,
        unless a listener already has part of the answer."""
        streamed: list[bool] = []
        try:
            return self._run(loaded, picture, call, call.max_image_size, streamed)
        except Exception as exc:
            if not _is_cuda_oom(exc):
                raise
            _free_memory()
            if any(streamed):
                raise OutOfMemoryError(
                    f"The GPU ran out of memory while reading; lower --max-image-size (now "
                    f"{_cap_text(call.max_image_size)}) or switch to 4-bit or the CPU.") from None
        longest = max(loaded.preparer.plan(picture.width, picture.height, call.max_image_size).size)
        smaller = max(IMAGE_FACTOR, int(longest * OOM_RETRY_SCALE))
        log.warning("CUDA out of memory; retrying once at %d px", smaller)
        try:
            return self._run(loaded, picture, call, smaller, streamed)
        except Exception as exc:
            if not _is_cuda_oom(exc):
                raise
            _free_memory()
            raise OutOfMemoryError(
                f"The GPU ran out of memory even at {smaller} px; lower --max-image-size "
                f"(now {_cap_text(call.max_image_size)}) or switch to 4-bit or the CPU.") from None

    def _run(self, loaded: LoadedModel, picture: Image.Image, call: Call, max_size: int,
             streamed: list[bool]) -> Generated:
        prepared = loaded.preparer.prepare(picture, max_size)
        ids = encode_prompt(loaded.tokenizer, call.instruction_for(prepared), prepared.image_tokens,
                            system=call.system)
        self._check_prompt_length(loaded, ids, prepared.image_tokens, call.max_prompt_tokens)
        max_new_tokens = min(call.max_new_tokens, loaded.decoder.max_positions - len(ids))  # the model's context
        pipeline = TokenPipeline(tokenizer=loaded.tokenizer, eos_token_ids=loaded.eos_token_ids,
                                 max_new_tokens=max_new_tokens, on_text=call.on_text, should_stop=call.should_stop)
        weights = loaded.gguf_type if loaded.decoder.name == "llamacpp" else loaded.precision
        speculate = speculates(self._settings.speculate, loaded.device, loaded.decoder.name, weights)
        drafter = _drafter(loaded, call.prompt) if speculate else None
        request = DecodeRequest(prompt_ids=ids, pixel_values=prepared.pixel_values, grid_thw=prepared.grid_thw,
                                image_token_id=loaded.image_token_id, max_new_tokens=max_new_tokens,
                                temperature=call.temperature, top_p=call.top_p,
                                eos_token_ids=tuple(loaded.eos_token_ids), drafter=drafter)
        if loaded.memory is not None:
            loaded.memory.reset()
        prepared_at = time.perf_counter()
        try:
            loaded.decoder.generate(request, pipeline)
        finally:
            streamed.append(pipeline.streamed)
        finished = time.perf_counter()
        stop_reason, kept = pipeline.finish()
        decode = loaded.tokenizer.decode
        return Generated(
            prepared=prepared, raw=decode(pipeline.tokens, skip_special_tokens=True),
            kept=decode(kept, skip_special_tokens=True), stop_reason=stop_reason, prompt_tokens=len(ids),
            generated_tokens=len(pipeline.tokens), prepared_at=prepared_at,
            first_token_at=pipeline.first_token_time or finished, finished_at=finished, device=loaded.device,
            precision=loaded.precision, decoder=loaded.decoder.name, gguf_type=loaded.gguf_type,
            loop_start=pipeline.guard.loop_start,
            peak_gpu_mb=loaded.memory.peak_mb() if loaded.memory is not None else None,
            tokens=kept, token_probabilities=pipeline.probabilities[:len(kept)],
            pieces=token_pieces(loaded.tokenizer, kept, pipeline.probabilities[:len(kept)]),
            draft_tokens=drafter.draft_tokens if drafter else 0,
            accepted_tokens=drafter.accepted_tokens if drafter else 0)

    @staticmethod
    def _check_prompt_length(loaded: LoadedModel, ids: list[int], image_tokens: int,
                             max_prompt_tokens: int | None) -> None:
        text_tokens = len(ids) - image_tokens
        if max_prompt_tokens is not None and text_tokens > max_prompt_tokens:
            raise PromptTooLongError(f"The prompt's text is {text_tokens} tokens, more than the {max_prompt_tokens} "
                                     "allowed; shorten the instruction.")
        positions = loaded.decoder.max_positions
        if len(ids) >= positions:
            raise PromptTooLongError(f"The prompt is {len(ids)} tokens (image included), as many as the model's "
                                     f"{positions} positions; use a smaller image (--max-image-size).")

    # -- housekeeping ------------------------------------------------------------------------------------

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
                with self._callers_lock:
                    idle = self._callers == 0
                if idle:
                    log.info("Unloading the model after %d idle minutes", self._settings.idle_minutes)
                    self.unload()
            finally:
                self._model_lock.release()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


def _drafter(loaded: LoadedModel, prompt: str) -> Drafter:
    """Speculative drafts for one answer, with the prompt mode's grammar sample in the model's own tokens."""
    seed = seed_for(prompt)
    return Drafter(loaded.tokenizer.encode(seed, add_special_tokens=False) if seed else (),
                   costs=loaded.decoder.batch_costs)


def _cap_text(max_size: int) -> str:
    return f"{max_size} px" if max_size else "no cap"


def _is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
