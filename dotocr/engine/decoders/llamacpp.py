"""The hybrid decoder: our PyTorch vision tower, and the Qwen2 decoder on llama.cpp.

The vision tower is loaded alone from the checkpoint's `vision_tower.*` weights (the decoder's 1.5 B weights are
never held by torch). Its image embeddings go to llama.cpp as embeddings batches at the image positions, the text
as token batches: a batch carries either ids or embeddings, never both, since with both set llama.cpp silently
takes the ids. Positions run 1-D and consecutively across the batches, and only the rows whose logits are needed
ask for them.

For an F32 GGUF the KV cache is F32 and flash attention is off: flash attention casts K and V to F16, and an F16
cache rounds them too, each enough to miss the 1e-4 parity with the torch decoder. The quantised files run with
llama.cpp's defaults for speed (F16 cache, flash attention where the backend has it).

Generated tokens decode at the thread count `ThreadTuner` picks from measured token times (all threads on an
idle machine, half of them when other processes take cores); prompt batches always use every thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DotOCRError
from ..gguf.convert import ensure_gguf
from ..llamacpp_runtime import load_bindings, recent_llama_errors
from ..model.vision_tower import int8_vision_tower, load_vision_tower
from ..plan import LoadPlan
from .amx import extra_buffers_allowed, request_amx_permission
from .base import DecodeRequest, OnToken
from .sampling import run_token_loop
from .speculation import BatchCosts
from .thread_tuner import ThreadTuner

log = logging.getLogger("dotocr.engine.llamacpp")

BATCH = 512  # rows per llama_decode call (and llama.cpp's physical batch)
MIN_CONTEXT = 4096  # KV cache slots allocated at first; grown (context recreated) when a request needs more


class LlamaCppDecodeError(DotOCRError):
    """llama.cpp refused to load the model or to decode a batch."""


class LlamaCppDecoder:
    """`Decoder` on llama.cpp, fed image embeddings from a PyTorch vision tower."""

    name = "llamacpp"

    def __init__(self, gguf: Path, vision: Any, *, gguf_type: str, n_threads: int | None = None,
                 device: str = "cpu", tune_threads: bool = True, extra_buffers: bool | None = None) -> None:
        import torch

        self._llama = load_bindings()
        self._vision = vision
        self._lock = threading.Lock()
        self.precision = gguf_type
        self._n_threads = n_threads or torch.get_num_threads() or os.cpu_count() or 1
        self._exact = gguf_type == "f32"
        # kept across requests: it follows the machine's load (tune_threads=False: always n_threads, for benchmarks)
        self._tuner = ThreadTuner(self._n_threads, adaptive=tune_threads)
        self._decode_threads = self._n_threads
        self.batch_costs = BatchCosts()
        llama = self._llama
        offload = device == "cuda" and bool(llama.llama_supports_gpu_offload())
        if device == "cuda" and not offload:
            log.info("This llama-cpp-python was built without GPU support; the decoder runs on the CPU.")
        self.device = "cuda" if offload else "cpu"
        params = llama.llama_model_default_params()
        params.n_gpu_layers = -1 if offload else 0
        # On an AMX CPU llama.cpp puts Q8_0/Q4 weights in its AMX buffer, which needs Linux's per-process AMX
        # permission and kernels that run: both checked before llama.cpp loads anything, else the buffers stay off.
        self.extra_buffers = extra_buffers_allowed(gguf) if extra_buffers is None else extra_buffers
        params.use_extra_bufts = self.extra_buffers
        self._model = llama.llama_model_load_from_file(os.fsencode(gguf), params)
        if not self._model:
            raise LlamaCppDecodeError(f"llama.cpp could not load {gguf}. {recent_llama_errors()}".rstrip())
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(llama.llama_model_n_embd_inp(self._model))
        self._n_ctx_train = int(llama.llama_model_n_ctx_train(self._model))
        self.max_positions = self._n_ctx_train
        self._ctx = None
        self._n_ctx = 0
        self._tokens = llama.llama_batch_init(BATCH, 0, 1)
        self._embeds = llama.llama_batch_init(BATCH, self.n_embd, 1)
        self._closed = False

    @property
    def vision_tower(self) -> Any:
        """The PyTorch vision tower feeding this decoder (benchmarks hook it to time the vision half)."""
        return self._vision

    # -- the Decoder interface -----------------------------------------------------------------------------

    def generate(self, request: DecodeRequest, on_token: OnToken, *, rng: np.random.Generator | None = None
                 ) -> list[int]:
        """New tokens after the prompt, eos included if produced; `on_token` sees each as soon as it is picked.

        With `request.drafter` the drafted tokens are checked in one batch with logits at every row, and the
        rejected ones are removed from the KV cache (`llama_memory_seq_rm`) before the next batch.
        """
        with self._lock:
            self._start(len(request.prompt_ids) + request.max_new_tokens)
            if request.max_new_tokens <= 0:
                return []
            first = self._prefill(request, all_logits=False)[-1]
            position = len(request.prompt_ids)

            def feed(tokens: Sequence[int]) -> np.ndarray:
                nonlocal position
                logits = self._decode_next(list(tokens), position)
                position += len(tokens)
                return logits

            def rewind(count: int) -> None:
                nonlocal position
                position -= count
                self._forget_from(position)

            return run_token_loop(first, feed, max_new_tokens=request.max_new_tokens, on_token=on_token,
                                  eos_token_ids=request.eos_token_ids, temperature=request.temperature,
                                  top_p=request.top_p, rng=rng, rewind=rewind, drafter=request.drafter,
                                  plain_step=lambda: self._tuner.probing)

    def prompt_logits(self, request: DecodeRequest) -> np.ndarray:
        """Logits at every prompt position (prompt length x vocab): what parity is checked on."""
        with self._lock:
            self._start(len(request.prompt_ids))
            return self._prefill(request, all_logits=True)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            llama = self._llama
            if self._ctx:
                llama.llama_free(self._ctx)
            self._ctx = None
            llama.llama_batch_free(self._tokens)
            llama.llama_batch_free(self._embeds)
            if self._model:
                llama.llama_model_free(self._model)
            self._model = None
            self._vision = None

    def __enter__(self) -> LlamaCppDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- llama.cpp plumbing --------------------------------------------------------------------------------

    def _start(self, needed: int) -> None:
        """A context with room for `needed` positions, its memory cleared of the previous prompt."""
        if self._closed:
            raise LlamaCppDecodeError("The llama.cpp decoder was closed; load the model again.")
        if needed > self._n_ctx_train:
            raise LlamaCppDecodeError(
                f"The prompt and max_new_tokens need {needed} positions, more than the model's {self._n_ctx_train}; "
                "use a smaller image or fewer new tokens.")
        if self._ctx is None or needed > self._n_ctx:
            self._make_context(min(self._n_ctx_train, max(MIN_CONTEXT, 1 << (needed - 1).bit_length())))
        self._llama.llama_memory_clear(self._llama.llama_get_memory(self._ctx), True)

    def _make_context(self, n_ctx: int) -> None:
        llama = self._llama
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
        params = llama.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self._n_threads
        if self._exact:
            params.type_k = params.type_v = llama.GGML_TYPE_F32
            params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise LlamaCppDecodeError(
                f"llama.cpp could not make a context of {n_ctx} tokens (out of memory?). {recent_llama_errors()}"
                .rstrip())
        self._ctx, self._n_ctx = ctx, n_ctx
        self._decode_threads = self._n_threads

    def _prefill(self, request: DecodeRequest, *, all_logits: bool) -> np.ndarray:
        """Feed the prompt: text runs as token batches, image runs as embedding batches. Returns requested logits."""
        ids = [int(t) for t in request.prompt_ids]
        if not ids:
            raise LlamaCppDecodeError("The prompt is empty; there is nothing to continue.")
        images = self._image_embeddings(request, ids)
        is_image = np.fromiter((t == request.image_token_id for t in ids), dtype=bool, count=len(ids))
        if images is None:
            is_image[:] = False
        out: list[np.ndarray] = []
        start, used = 0, 0
        while start < len(ids):
            end = start + 1
            while end < len(ids) and is_image[end] == is_image[start]:
                end += 1
            for lo in range(start, end, BATCH):
                hi = min(end, lo + BATCH)
                want = [all_logits or i == len(ids) - 1 for i in range(lo, hi)]
                if is_image[start]:
                    rows = images[used:used + hi - lo]
                    used += hi - lo
                    logits = self._decode_embeddings(rows, lo, want)
                else:
                    logits = self._decode_tokens(ids[lo:hi], lo, want)
                if len(logits):
                    out.append(logits)
            start = end
        return np.concatenate(out)

    def _image_embeddings(self, request: DecodeRequest, ids: list[int]) -> np.ndarray | None:
        n_image = sum(t == request.image_token_id for t in ids)
        if request.pixel_values is None:
            if n_image:
                raise LlamaCppDecodeError(f"The prompt holds {n_image} image tokens but no image was given.")
            return None
        import torch

        tower = self._vision
        with torch.inference_mode():
            pixels = request.pixel_values.to(device=tower.patch_embed.patchifier.proj.weight.device)
            embeds = tower(pixels, request.grid_thw.to(pixels.device))
        rows = np.ascontiguousarray(embeds.float().cpu().numpy(), dtype=np.float32)
        if rows.shape != (n_image, self.n_embd):
            raise LlamaCppDecodeError(
                f"The prompt holds {n_image} image tokens (id {request.image_token_id}) but the images produce "
                f"{rows.shape[0]} embeddings of width {rows.shape[1]}; the prompt must carry one <|imgpad|> per "
                "merged patch.")
        return rows

    def _decode_next(self, tokens: list[int], position: int) -> np.ndarray:
        """Generated tokens' logits (one row per token), decoded at the thread count the tuner picks, and timed
        for it (the tuner compares single tokens; a verification batch only counts towards its clock)."""
        threads = self._tuner.threads()
        if threads != self._decode_threads:
            self._llama.llama_set_n_threads(self._ctx, threads, self._n_threads)
            self._decode_threads = threads
            log.debug("llama.cpp decodes with %d thread(s) now", threads)
        started = time.perf_counter()
        logits = self._decode_tokens(tokens, position, want=[True] * len(tokens))
        self._tuner.record(threads, time.perf_counter() - started, tokens=len(tokens))
        return logits

    def _forget_from(self, position: int) -> None:
        """Remove every position from `position` on from the KV cache (a rejected draft leaves no trace)."""
        llama = self._llama
        if not llama.llama_memory_seq_rm(llama.llama_get_memory(self._ctx), 0, position, -1):
            raise LlamaCppDecodeError(f"llama.cpp could not remove positions from {position} on from its cache.")

    def _decode_tokens(self, ids: list[int], position: int, want: list[bool]) -> np.ndarray:
        batch = self._tokens
        for i, token in enumerate(ids):
            if not 0 <= token < self.n_vocab:
                raise LlamaCppDecodeError(f"Token id {token} is outside the model's vocabulary of {self.n_vocab}.")
            batch.token[i] = token
        return self._decode(batch, len(ids), position, want)

    def _decode_embeddings(self, rows: np.ndarray, position: int, want: list[bool]) -> np.ndarray:
        batch = self._embeds
        ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
        return self._decode(batch, rows.shape[0], position, want)

    def _decode(self, batch, n: int, position: int, want: list[bool]) -> np.ndarray:
        """One llama_decode of `n` rows at consecutive positions; the logits of the rows in `want`."""
        llama = self._llama
        batch.n_tokens = n
        for i in range(n):
            batch.pos[i] = position + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if want[i] else 0
        code = llama.llama_decode(self._ctx, batch)
        if code != 0:
            # A failed decode leaves the previous logits readable: never read them as if this one had worked.
            raise LlamaCppDecodeError(
                f"llama.cpp failed to decode {n} tokens at position {position} (code {code}). "
                f"{recent_llama_errors()}".rstrip())
        rows = []
        for i in range(n):
            if want[i]:
                pointer = llama.llama_get_logits_ith(self._ctx, i)
                if not pointer:
                    raise LlamaCppDecodeError(f"llama.cpp returned no logits for row {i} of a batch.")
                rows.append(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy())
        return np.stack(rows) if rows else np.empty((0, self.n_vocab), dtype=np.float32)


# -- loading ---------------------------------------------------------------------------------------------------

def load_llamacpp_decoder(folder: Path, plan: LoadPlan, *, n_threads: int | None = None,
                          gguf_dir: Path | None = None, on_progress: Callable[[float], None] | None = None,
                          tune_threads: bool = True) -> LlamaCppDecoder:
    """The loader's entry point: the plan's GGUF, written once if needed, and the vision tower in its dtype."""
    if plan.decoder != "llamacpp" or plan.gguf_type is None:
        raise LlamaCppDecodeError(f"The load plan runs the {plan.decoder} decoder, not llama.cpp with a GGUF type.")
    import torch

    folder = Path(folder)
    load_bindings()  # fail with the install hint before spending minutes on a conversion
    gguf = ensure_gguf(folder, plan.gguf_type, directory=gguf_dir, n_threads=n_threads, on_progress=on_progress)
    if plan.vision_precision == "int8":
        tower = int8_vision_tower(load_vision_tower(folder, dtype=torch.float32, device=plan.device))
    else:
        tower = load_vision_tower(folder, dtype=getattr(torch, plan.torch_dtype), device=plan.device)
    return LlamaCppDecoder(gguf, tower, gguf_type=plan.gguf_type, n_threads=n_threads, device=plan.device,
                           tune_threads=tune_threads)


def amx_probe(gguf: str) -> None:
    """The child process `amx.amx_runs_here` starts on an AMX CPU: the permission, then `gguf` on llama.cpp's extra
    (AMX) buffers, a prompt batch and a few tokens; "amx ok" when all of it ran. A SIGILL ends only this child."""
    if not request_amx_permission():
        raise SystemExit(3)
    with LlamaCppDecoder(Path(gguf), None, gguf_type="probe", n_threads=2, extra_buffers=True) as decoder:
        prompt = list(range(1, 33))
        decoder.generate(DecodeRequest(prompt, None, None, -1, 4), lambda token, probability: False)
    print("amx ok", flush=True)


__all__ = ["LlamaCppDecodeError", "LlamaCppDecoder", "amx_probe", "load_llamacpp_decoder"]
