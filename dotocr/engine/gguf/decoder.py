"""The decoder of a dots.ocr checkpoint as a llama.cpp GGUF file, written once and reused.

dots.ocr's language model is a Qwen2 decoder (1-D RoPE, biases on q/k/v, untied lm_head), so it maps onto
llama.cpp's `qwen2` architecture without any reshaping: a Linear weight stored (out, in) in safetensors is
exactly the (rows, cols) GGUF expects. The vision tower is not written; it stays on PyTorch.

F32 and F16 files are written here with the `gguf` package, one tensor at a time (the package's `add_tensor`
would hold every tensor in memory, about 6 GB for the real decoder in F32). Q8_0 and Q4_K_M are made from one
of those by llama.cpp's own `llama_model_quantize`, so the quantised blocks are the ones llama.cpp expects.

Files live in the data directory under `gguf/`, named by the checkpoint's identity and the type, and are
written to a unique temporary name and renamed into place, so a crash or a second process never leaves a
half-written file where a reader would take it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import GGUF_TYPES, data_dir
from ...errors import DotOCRError

log = logging.getLogger("dotocr.engine")

WRITTEN_TYPES = ("f32", "f16")  # written by us; the others are quantised by llama.cpp from one of these
# llama_ftype values in llama.h (stable since the GGUF format began).
LLAMA_FTYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}
FORMAT_VERSION = 3  # bump when the written file changes, so cached files from an older writer are not reused

END_OF_ANSWER = "<|endofassistant|>"
"""dots.ocr ends an answer with this token, not with eos; written as the end-of-turn token, which llama.cpp (and
so llama-server) treats as end of generation: its built-in list of such names does not know this one."""

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


class GGUFExportError(DotOCRError):
    """The checkpoint cannot be written as a llama.cpp GGUF (missing tensors, an unsupported tokenizer...)."""


@dataclass(frozen=True)
class SourceTensor:
    gguf_name: str
    source_name: str
    file: Path
    shape: tuple[int, ...]
    dtype: str = ""  # as safetensors names it ("BF16", "F32", ...)


# -- where files live ----------------------------------------------------------------------------------------

def checkpoint_key(folder: Path) -> str:
    """Identity of a checkpoint: its path and the name, size and modification time of every file we read.

    Hashing gigabytes of weights on every start would cost more than the conversion saves; a changed file
    changes its size or mtime, which is enough to never reuse a GGUF written from other weights.
    """
    folder = Path(folder).resolve()
    digest = hashlib.sha256(f"dotocr-gguf v{FORMAT_VERSION}\n{folder}\n".encode())
    for path in sorted(folder.iterdir()):
        if path.suffix in (".json", ".safetensors") and path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    return data_dir() / "gguf"


def gguf_path(folder: Path, gguf_type: str, *, directory: Path | None = None) -> Path:
    """Where the GGUF of this checkpoint and type lives (whether or not it has been written yet)."""
    _check_type(gguf_type)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in display_name(Path(folder))) or "model"
    return (directory or cache_dir()) / f"{name}-{checkpoint_key(folder)}-{gguf_type}.gguf"


def display_name(folder: Path) -> str:
    """The folder's name, or the repo's for a Hugging Face snapshot (models--org--name/snapshots/<commit>)."""
    folder = folder.resolve()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


def ensure_gguf(folder: Path, gguf_type: str, *, directory: Path | None = None, progress: bool = True,
                n_threads: int | None = None, on_progress: Callable[[float], None] | None = None) -> Path:
    """The GGUF of `folder` in `gguf_type`, written (or quantised) now if it is not in the cache yet.

    `on_progress` gets the written fraction of the F16/F32 file (for the engine's state); quantising after it
    reports nothing, as llama.cpp's quantiser has no progress callback.
    """
    folder = Path(folder)
    target = gguf_path(folder, gguf_type, directory=directory)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return _make_gguf(folder, gguf_type, target, directory, progress, n_threads, on_progress)
    except OSError as exc:
        raise GGUFExportError(
            f"Could not write {target} ({exc.strerror or exc}); free some disk space (the file is about "
            "1-6 GB), or point DOTOCR_DATA_DIR at a drive with room.") from None


def _make_gguf(folder: Path, gguf_type: str, target: Path, directory: Path | None, progress: bool,
               n_threads: int | None, on_progress: Callable[[float], None] | None) -> Path:
    if gguf_type in WRITTEN_TYPES:
        log.info("Writing the decoder of %s as a %s GGUF (once): %s", folder, gguf_type.upper(), target)
        with staged_output(target) as tmp:
            write_decoder_gguf(folder, tmp, gguf_type, progress=progress, on_progress=on_progress)
        return target
    from ..llamacpp_runtime import load_bindings

    load_bindings()  # a missing llama.cpp is said before minutes of writing, not after
    # Quantise from an already cached F16/F32 file if there is one, else from a temporary one deleted afterwards.
    source_type = "f32" if _source_is_f32(folder) else "f16"
    cached = gguf_path(folder, source_type, directory=directory)
    log.info("Writing the decoder of %s as a %s GGUF (once): %s", folder, gguf_type.upper(), target)
    with contextlib.ExitStack() as stack:
        if cached.is_file():
            source = cached
        else:
            source = stack.enter_context(staged_output(target.with_suffix(f".{source_type}.gguf"), keep=False))
            write_decoder_gguf(folder, source, source_type, progress=progress, on_progress=on_progress)
        log.info("Quantising to %s with llama.cpp", gguf_type.upper())
        with staged_output(target) as tmp:
            quantize_gguf(source, tmp, gguf_type, n_threads=n_threads)
    return target


def convert_gguf(model: str, gguf_type: str = "q8_0", *, mmproj_type: str | None = "bf16",
                 output: Path | None = None, progress: bool = True, n_threads: int | None = None) -> list[Path]:
    """`dotocr convert-gguf`: a checkpoint as GGUF files for llama.cpp or Ollama elsewhere.

    The decoder in `gguf_type`, and (unless `mmproj_type` is None) the vision tower as llama.cpp's dots_ocr
    mmproj. `model` is a folder or a Hugging Face repo id, as for OCR. The files are made in (or taken from) the
    cache; with `output` they are also copied there: into it if it is a folder, else the decoder to that name and
    the mmproj beside it as "mmproj-NAME". Returns where the files are, decoder first.
    """
    from ..loading import resolve_checkpoint
    from .mmproj import check_mmproj_type, ensure_mmproj

    _check_type(gguf_type)
    if mmproj_type is not None:
        check_mmproj_type(mmproj_type)  # an unknown type is said before minutes of conversion, not after
    if output is not None:
        output = Path(output).expanduser()
        parent = output if output.is_dir() else output.parent
        if not parent.is_dir():  # said before minutes of conversion, not after
            raise GGUFExportError(f"The folder {parent} does not exist; create it or choose another --output.")
    folder = resolve_checkpoint(model)
    paths = [ensure_gguf(folder, gguf_type, progress=progress, n_threads=n_threads)]
    if mmproj_type is not None:
        paths.append(ensure_mmproj(folder, mmproj_type, progress=progress))
    if output is None:
        return paths
    if output.is_dir():
        return [_copy_out(path, output / path.name) for path in paths]
    targets = [output, output.with_name(f"mmproj-{output.name}")][:len(paths)]
    return [_copy_out(path, target) for path, target in zip(paths, targets, strict=True)]


def _copy_out(path: Path, output: Path) -> Path:
    import shutil

    try:
        with staged_output(output) as tmp:
            shutil.copyfile(path, tmp)
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # a file the person asked for gets the usual mode, not the temp file's
    except OSError as exc:
        raise GGUFExportError(f"Could not write {output} ({exc.strerror or exc}); choose another --output.") from None
    return output


@contextlib.contextmanager
def staged_output(target: Path, *, keep: bool = True) -> Iterator[Path]:
    """A unique temporary path beside `target`; renamed onto it on success (if `keep`), removed otherwise."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if keep:
            os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def import_gguf():
    try:
        import gguf
    except ImportError:
        raise GGUFExportError('Writing a GGUF needs the gguf package: pip install "dotocr[llamacpp]".') from None
    return gguf


def _check_type(gguf_type: str) -> None:
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"Unknown GGUF type {gguf_type!r}; choose one of {', '.join(GGUF_TYPES)}.")


# -- reading the checkpoint ----------------------------------------------------------------------------------

def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"The checkpoint in {folder} has no readable config.json ({exc}).") from None
    text = config.get("text_config") or config  # later layouts may nest the language model's config
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise GGUFExportError(f"The checkpoint in {folder} uses {rope_type!r} RoPE scaling, which the GGUF writer "
                              "does not support; use the torch decoder.")
    return {
        "vocab_size": int(text["vocab_size"]),
        "hidden_size": int(text["hidden_size"]),
        "intermediate_size": int(text["intermediate_size"]),
        "num_hidden_layers": int(text["num_hidden_layers"]),
        "num_attention_heads": int(text["num_attention_heads"]),
        "num_key_value_heads": int(text.get("num_key_value_heads") or text["num_attention_heads"]),
        "max_position_embeddings": int(text.get("max_position_embeddings", 131072)),
        "rms_norm_eps": float(text.get("rms_norm_eps", 1e-6)),
        "rope_theta": float(text.get("rope_theta") or rope.get("rope_theta") or 1000000.0),
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
    }


def source_tensors(folder: Path, config: dict[str, Any]) -> list[SourceTensor]:
    """The decoder's tensors in the order they are written, found across all safetensors shards."""
    from safetensors import safe_open

    where: dict[str, tuple[Path, tuple[int, ...]]] = {}
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"The checkpoint in {folder} holds no .safetensors weights.")
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                if name.startswith(("model.", "lm_head.")):
                    where[name] = (file, tuple(handle.get_slice(name).get_shape()))
    wanted = [("model.embed_tokens.weight", "token_embd.weight")]
    for i in range(config["num_hidden_layers"]):
        wanted += [(f"model.layers.{i}.{src}", f"blk.{i}.{dst}") for src, dst in LAYER_NAMES.items()]
    wanted.append(("model.norm.weight", "output_norm.weight"))
    if not config["tie_word_embeddings"] and "lm_head.weight" in where:
        wanted.append(("lm_head.weight", "output.weight"))  # absent: llama.cpp reuses token_embd, i.e. tied
    missing = [src for src, _ in wanted if src not in where]
    if missing:
        raise GGUFExportError(f"The checkpoint in {folder} lacks decoder weights ({', '.join(missing[:3])}"
                              f"{' ...' if len(missing) > 3 else ''}); is it a dots.ocr checkpoint?")
    return [SourceTensor(dst, src, *where[src]) for src, dst in wanted]


def _source_is_f32(folder: Path) -> bool:
    from safetensors import safe_open

    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118
                if name.startswith("model.layers."):
                    return handle.get_slice(name).get_dtype() == "F32"
    return False


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
    vocab = read_vocab(folder, config["vocab_size"])
    stream_gguf(out, "qwen2", source_tensors(folder, config),
                lambda t: gguf_type if len(t.shape) > 1 else "f32",
                lambda writer: _add_metadata(writer, folder, config, vocab, gguf_type),
                desc=f"GGUF {gguf_type.upper()}", progress=progress, on_progress=on_progress)


TENSOR_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


def stream_gguf(out: Path, arch: str, tensors: list[SourceTensor], type_of: Callable[[SourceTensor], str],
                add_metadata: Callable[[Any], None], *, desc: str, progress: bool = True,
                on_progress: Callable[[float], None] | None = None) -> None:
    """Write a GGUF whose tensors are read from safetensors one at a time, so memory holds one tensor at most.

    `type_of` says how each tensor is stored ("f32", "f16" or "bf16"); the header, which lists every tensor's
    type and size, is written first, then the data in the same order.
    """
    import numpy as np
    from safetensors import safe_open
    from tqdm.auto import tqdm

    gguf = import_gguf()
    writer = gguf.GGUFWriter(out, arch)
    add_metadata(writer)
    total = 0
    for t in tensors:
        kind = type_of(t)
        nbytes = int(np.prod(t.shape)) * TENSOR_BYTES[kind]
        if kind == "bf16":  # numpy has no bfloat16: the raw 16-bit words, declared as BF16
            writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.uint16), nbytes,
                                   raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float16 if kind == "f16" else np.float32),
                                   nbytes)
        total += nbytes
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles: dict[Path, Any] = {}
        done = 0
        bar = progress and sys.stderr is not None and sys.stderr.isatty()  # a terminal, not a log or a pipe
        with contextlib.ExitStack() as stack, tqdm(total=total, unit="B", unit_scale=True, disable=not bar,
                                                   desc=desc) as bar:
            for t in tensors:
                if t.file not in handles:
                    handles[t.file] = stack.enter_context(safe_open(t.file, framework="pt"))
                data = _encode(handles[t.file].get_tensor(t.source_name), type_of(t))
                writer.write_tensor_data(data)
                bar.update(data.nbytes)
                done += data.nbytes
                if on_progress is not None:
                    on_progress(done / total)
                del data
        writer.flush()
    finally:
        writer.close()


def _encode(tensor: Any, kind: str) -> Any:
    """A checkpoint tensor as the numpy array GGUF stores for `kind` (BF16 rounded by torch, to nearest even)."""
    import numpy as np
    import torch

    if kind == "bf16":
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    return tensor.to(torch.float32).numpy().astype(np.float16 if kind == "f16" else np.float32)


def _add_metadata(writer, folder: Path, config: dict[str, Any], vocab: Vocab, gguf_type: str) -> None:
    writer.add_name(display_name(Path(folder)))
    writer.add_file_type(LLAMA_FTYPES[gguf_type])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
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
    from ..llamacpp_runtime import load_bindings, recent_llama_errors

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


__all__ = ["GGUF_TYPES", "GGUFExportError", "checkpoint_key", "convert_gguf", "ensure_gguf", "gguf_path",
           "quantize_gguf", "read_config", "read_vocab", "write_decoder_gguf"]
