"""llama.cpp's own multimodal path (libmtmd, shipped in llama-cpp-python), driven the way llama-server drives it.

Only tests use this: our engine feeds llama.cpp its own embeddings. Here llama.cpp preprocesses and encodes the
image with the mmproj we wrote, so its output can be held against our vision tower and our engine.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def mtmd_session(text_gguf: Path, mmproj: Path, *, exact: bool = True) -> Iterator[MtmdSession]:
    """A loaded text model, context and mtmd context; `exact`: F32 KV cache and no flash attention anywhere."""
    import llama_cpp as llama
    import llama_cpp.mtmd_cpp as mtmd

    from dotocr.engine.decoders.amx import extra_buffers_allowed

    llama.llama_backend_init()
    model_params = llama.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model_params.use_extra_bufts = extra_buffers_allowed(Path(text_gguf))  # as the decoder does (amx.py)
    model = llama.llama_model_load_from_file(os.fsencode(text_gguf), model_params)
    assert model, f"llama.cpp could not load {text_gguf}"
    params = llama.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 2048, 2, 2
    if exact:
        params.type_k = params.type_v = llama.GGML_TYPE_F32
        params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = llama.llama_init_from_model(model, params)
    mparams = mtmd.mtmd_context_params_default()
    mparams.use_gpu, mparams.n_threads, mparams.print_timings, mparams.warmup = False, 2, False, False
    if exact:
        mparams.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
    mctx = mtmd.mtmd_init_from_file(os.fsencode(mmproj), model, mparams)
    assert mctx, f"libmtmd could not load {mmproj}"
    try:
        yield MtmdSession(llama, mtmd, model, ctx, mctx, params.n_batch)
    finally:
        mtmd.mtmd_free(mctx)
        llama.llama_free(ctx)
        llama.llama_model_free(model)


class MtmdSession:
    def __init__(self, llama, mtmd, model, ctx, mctx, n_batch: int) -> None:
        self.llama, self.mtmd, self.model, self.ctx, self.mctx, self.n_batch = llama, mtmd, model, ctx, mctx, n_batch
        self.n_embd = llama.llama_model_n_embd_inp(model)
        self.n_vocab = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(model))

    @contextmanager
    def chunks(self, prompt: str, rgb: np.ndarray) -> Iterator[list]:
        """`prompt` (with mtmd's media marker where the image goes, special tokens parsed) and one RGB image."""
        mtmd = self.mtmd
        height, width, _ = rgb.shape
        data = np.ascontiguousarray(rgb, dtype=np.uint8)
        bitmap = mtmd.mtmd_bitmap_init(width, height, (ctypes.c_uint8 * data.size).from_buffer_copy(data.tobytes()))
        raw = prompt.replace("<image>", mtmd.mtmd_default_marker().decode()).encode()
        text = mtmd.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), False, True
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            code = mtmd.mtmd_tokenize(self.mctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
            assert code == 0, f"mtmd_tokenize returned {code}"
            yield [mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))]
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)

    def is_image(self, chunk) -> bool:
        return self.mtmd.mtmd_input_chunk_get_type(chunk) == self.mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE

    def text_ids(self, chunk) -> list[int]:
        count = ctypes.c_size_t(0)
        ids = self.mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
        return [int(ids[i]) for i in range(count.value)]

    def encode(self, chunk) -> np.ndarray:
        """llama.cpp's vision encoder on an image chunk: (image tokens x n_embd)."""
        assert self.mtmd.mtmd_encode_chunk(self.mctx, chunk) == 0
        n = self.mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        return np.ctypeslib.as_array(self.mtmd.mtmd_get_output_embd(self.mctx), shape=(n * self.n_embd,)
                                     ).reshape(n, self.n_embd).copy()

    def greedy(self, prompt: str, rgb: np.ndarray, new_tokens: int) -> list[int]:
        """What llama-server does with a prompt and an image, greedy, without stopping at eos."""
        llama, mtmd = self.llama, self.mtmd
        llama.llama_memory_clear(llama.llama_get_memory(self.ctx), True)
        with self.chunks(prompt, rgb) as chunks:
            n_past = llama.llama_pos(0)
            for i, chunk in enumerate(chunks):
                new_past = llama.llama_pos(0)
                code = mtmd.mtmd_helper_eval_chunk_single(self.mctx, self.ctx, chunk, n_past, 0, self.n_batch,
                                                          i == len(chunks) - 1, ctypes.byref(new_past))
                assert code == 0, f"mtmd_helper_eval_chunk_single returned {code}"
                n_past = new_past
        tokens: list[int] = []
        while True:
            logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            tokens.append(int(logits.argmax()))
            if len(tokens) == new_tokens:
                return tokens
            batch = (llama.llama_token * 1)(tokens[-1])
            assert llama.llama_decode(self.ctx, llama.llama_batch_get_one(batch, 1)) == 0
