"""The decoder of a dots.ocr checkpoint as a llama.cpp `qwen2` GGUF with its tokenizer.

dots.ocr's language model is a Qwen2 decoder (1-D RoPE, biases on q/k/v, untied lm_head), so it maps onto
llama.cpp's `qwen2` architecture without any reshaping: a Linear weight stored (out, in) in safetensors is
exactly the (rows, cols) GGUF expects. The vision tower is not written here (see `mmproj.py`).

F32 and F16 files are written with the `gguf` package one tensor at a time (`base.stream_gguf`); Q8_0 and
Q4_K_M are made from one of those by llama.cpp's own `llama_model_quantize`, so the quantised blocks are the
ones llama.cpp expects. The hyperparameters come from the config class, which owns the checkpoint's defaults.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import one_line
from ..llamacpp_runtime import load_bindings, recent_llama_errors
from ..model.spellings import DECODER_PREFIXES, END_OF_ANSWER
from .base import (
    GGUFExportError,
    SourceTensor,
    checkpoint_tensors,
    display_name,
    import_gguf,
    pick_tensors,
    stream_gguf,
)

WRITTEN_TYPES = ("f32", "f16")  # written by us; the others are quantised by llama.cpp from one of these
# llama_ftype values in llama.h (stable since the GGUF format began).
LLAMA_FTYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}

# The Qwen2 pre-tokenizer split, as it appears in Qwen2's tokenizer.json; llama.cpp calls it "qwen2".
QWEN2_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# checkpoint name (after "model.layers.N.") -> llama.cpp name (after "blk.N.")
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                "lm_head.weight": "output.weight"}


# -- the checkpoint's hyperparameters and tensors ------------------------------------------------------------

def read_config(folder: Path) -> Any:
    """The checkpoint's `DotsOCRConfig` (its defaults fill what config.json leaves out); RoPE scaling, which the
    `qwen2` graph does not have, is refused."""
    from ..model.configuration_dots import DotsOCRConfig

    try:
        config = DotsOCRConfig.from_pretrained(folder)
    except Exception as exc:
        raise GGUFExportError(f"The checkpoint in {folder} has no readable config.json ({one_line(exc)}).") from None
    rope_type = rope_parameters(config).get("rope_type") or "default"
    if rope_type != "default":
        raise GGUFExportError(f"The checkpoint in {folder} uses {rope_type!r} RoPE scaling, which the GGUF writer "
                              "does not support; use the torch decoder.")
    return config


def rope_parameters(config: Any) -> dict[str, Any]:
    return dict(getattr(config, "rope_parameters", None) or {})


def source_tensors(folder: Path, config: Any) -> list[SourceTensor]:
    """The decoder's tensors in the order they are written, found across all safetensors shards."""
    where = checkpoint_tensors(folder, DECODER_PREFIXES)
    first, *rest = GLOBAL_NAMES.items()
    wanted = [first]
    for i in range(config.num_hidden_layers):
        wanted += [(f"model.layers.{i}.{src}", f"blk.{i}.{dst}") for src, dst in LAYER_NAMES.items()]
    norm, head = rest
    wanted.append(norm)
    if not config.tie_word_embeddings and head[0] in where:
        wanted.append(head)  # absent: llama.cpp reuses token_embd, i.e. tied
    return pick_tensors(folder, where, wanted, "decoder weights")


def source_is_f32(folder: Path) -> bool:
    """Whether the checkpoint's decoder layers are stored in F32 (then an F32 file is quantised from, else F16)."""
    where = checkpoint_tensors(folder, ("model.layers.",))
    return next(iter(where.values()))[2] == "F32" if where else False


# -- tokenizer -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    eos_id: int | None
    eot_id: int | None
    pad_id: int | None
    bos_id: int | None
    chat_template: str | None


def read_vocab(folder: Path, vocab_size: int) -> Vocab:
    """tokenizer.json's byte-level BPE as llama.cpp's "gpt2" tokenizer model: tokens by id, their types, merges.

    Ids the tokenizer leaves unused up to the embedding size are named [PADn] and marked unused, as the
    embedding matrix has rows for them.
    """
    TokenType = import_gguf().TokenType  # noqa: N806

    folder = Path(folder)
    try:
        spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"The checkpoint in {folder} has no readable tokenizer.json ({exc}).") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFExportError(f"The tokenizer in {folder} is not a byte-level BPE tokenizer; cannot write a GGUF.")
    tokens: list[str | None] = [None] * vocab_size
    types = [int(TokenType.UNUSED)] * vocab_size
    entries = [(text, i, int(TokenType.NORMAL)) for text, i in model["vocab"].items()]
    for added in spec.get("added_tokens", []):
        kind = TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED
        entries.append((added["content"], added["id"], int(kind)))
    for text, i, kind in entries:
        if not 0 <= i < vocab_size:
            raise GGUFExportError(f"The tokenizer in {folder} has token id {i}, beyond the model's {vocab_size} "
                                  "embeddings.")
        tokens[i], types[i] = text, kind
    names = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    ids = {text: i for i, text in enumerate(names)}

    def special(key: str) -> int | None:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return ids.get(value) if isinstance(value, str) else None

    template = config.get("chat_template")
    pre = _pre_tokenizer(spec, folder, config.get("tokenizer_class"))
    return Vocab(tokens=names, token_types=types, merges=merges, pre=pre,
                 eos_id=special("eos_token"), eot_id=ids.get(END_OF_ANSWER), pad_id=special("pad_token"),
                 bos_id=special("bos_token"),
                 chat_template=template if isinstance(template, str) else None)


QWEN2_TOKENIZERS = ("Qwen2Tokenizer", "Qwen2TokenizerFast")


def _pre_tokenizer(spec: dict[str, Any], folder: Path, tokenizer_class: Any = None) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer: Qwen2's split ("qwen2") or plain GPT-2 ("gpt-2").

    A checkpoint whose tokenizer_config names Qwen2's tokenizer class is split the Qwen2 way whatever its
    tokenizer.json says: transformers 5 builds that class with Qwen2's split, so that is how our engine
    tokenizes, and llama-server, which tokenizes the instruction itself, must split the same way."""
    if tokenizer_class in QWEN2_TOKENIZERS:
        return "qwen2"
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == QWEN2_SPLIT_REGEX:
        return "qwen2"
    raise GGUFExportError(f"The tokenizer in {folder} splits text in a way llama.cpp's qwen2/gpt-2 pre-tokenizers "
                          "do not reproduce; use the torch decoder.")


# -- writing -------------------------------------------------------------------------------------------------

def write_decoder_gguf(folder: Path, out: Path, gguf_type: str, *, progress: bool = True,
                       on_progress: Callable[[float], None] | None = None) -> None:
    """Write the decoder as a `qwen2` GGUF in F32 or F16 (norms and biases stay F32, as llama.cpp expects)."""
    if gguf_type not in WRITTEN_TYPES:
        raise GGUFExportError(f"Only {' and '.join(WRITTEN_TYPES)} are written directly; {gguf_type} is quantised.")
    folder = Path(folder)
    config = read_config(folder)
    vocab = read_vocab(folder, config.vocab_size)
    stream_gguf(out, "qwen2", source_tensors(folder, config),
                lambda t: gguf_type if len(t.shape) > 1 else "f32",
                lambda writer: _add_metadata(writer, folder, config, vocab, gguf_type),
                desc=f"GGUF {gguf_type.upper()}", progress=progress, on_progress=on_progress)


def _add_metadata(writer, folder: Path, config: Any, vocab: Vocab, gguf_type: str) -> None:
    writer.add_name(display_name(Path(folder)))
    writer.add_file_type(LLAMA_FTYPES[gguf_type])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(rope_parameters(config)["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_add_bos_token(False)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    if vocab.eot_id is not None:  # llama.cpp ends generation at the end-of-turn token as at eos
        writer.add_eot_token_id(vocab.eot_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


# -- quantising ----------------------------------------------------------------------------------------------

def quantize_gguf(source: Path, out: Path, gguf_type: str, *, n_threads: int | None = None) -> None:
    """llama.cpp's own quantiser (`llama_model_quantize`), called through llama-cpp-python's bindings."""

    if gguf_type not in LLAMA_FTYPES or gguf_type in WRITTEN_TYPES:
        raise GGUFExportError(f"{gguf_type} is not a quantised type; choose q8_0 or q4_k_m.")
    llama = load_bindings()
    params = llama.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPES[gguf_type]
    params.nthread = n_threads or 0  # 0: llama.cpp uses every hardware thread
    code = llama.llama_model_quantize(os.fsencode(source), os.fsencode(out), ctypes.byref(params))
    if code != 0:
        raise GGUFExportError(f"llama.cpp could not quantise {source} to {gguf_type} (code {code}). "
                              f"{recent_llama_errors()}".rstrip())


__all__ = ["GGUFExportError", "LLAMA_FTYPES", "WRITTEN_TYPES", "quantize_gguf", "read_config", "read_vocab",
           "source_tensors", "write_decoder_gguf"]
