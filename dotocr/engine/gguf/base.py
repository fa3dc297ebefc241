"""What every GGUF we write shares, as llama.cpp's `conversion/` base does: the error, the checkpoint's tensors
as sources, the streaming writer, and where the files of a checkpoint live in the cache.

A file is named by the checkpoint's identity (`checkpoint_key`) and its type, so one written from other
weights is never reused, and every file is written through `storage.atomic_path`, so a crash or a second
process never leaves a half-written file where a reader would take it.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import data_dir
from ...errors import DotOCRError

FORMAT_VERSION = 3  # bump when a written file changes, so cached files from an older writer are not reused
TENSOR_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


class GGUFExportError(DotOCRError):
    """The checkpoint cannot be written as a llama.cpp GGUF (missing tensors, an unsupported tokenizer...)."""


@dataclass(frozen=True)
class SourceTensor:
    gguf_name: str
    source_name: str
    file: Path
    shape: tuple[int, ...]
    dtype: str = ""  # as safetensors names it ("BF16", "F32", ...)


def import_gguf():
    try:
        import gguf
    except ImportError:
        raise GGUFExportError('Writing a GGUF needs the gguf package: pip install "dotocr[llamacpp]".') from None
    return gguf


# -- the checkpoint's tensors ----------------------------------------------------------------------------------

def checkpoint_tensors(folder: Path, prefixes: tuple[str, ...]) -> dict[str, tuple[Path, tuple[int, ...], str]]:
    """name -> (file, shape, dtype) for every weight whose name starts with one of `prefixes`, across all shards."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise GGUFExportError(f"The checkpoint in {folder} holds no .safetensors weights.")
    where: dict[str, tuple[Path, tuple[int, ...], str]] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open handles are not mappings)
                if name.startswith(prefixes):
                    piece = handle.get_slice(name)
                    where[name] = (file, tuple(piece.get_shape()), piece.get_dtype())
    return where


def pick_tensors(folder: Path, where: dict[str, tuple[Path, tuple[int, ...], str]],
                 wanted: list[tuple[str, str]], what: str, hint: str = "is it a dots.ocr checkpoint?",
                 optional: Callable[[str], bool] = lambda _: False) -> list[SourceTensor]:
    """The (checkpoint name, GGUF name) pairs in `wanted` as sources in that order; a missing one that is not
    `optional` is one sentence: the checkpoint lacks `what` (the first names), then `hint`."""
    missing = [src for src, dst in wanted if src not in where and not optional(dst)]
    if missing:
        raise GGUFExportError(f"The checkpoint in {folder} lacks {what} ({', '.join(missing[:3])}"
                              f"{' ...' if len(missing) > 3 else ''}); {hint}")
    return [SourceTensor(dst, src, *where[src]) for src, dst in wanted if src in where]


# -- writing ---------------------------------------------------------------------------------------------------

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


# -- checking a file -------------------------------------------------------------------------------------------

_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""GGUF metadata value types and their sizes (8 is a string, 9 an array)."""
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32


class _Truncated(Exception):
    """The file ends before its header says it does."""


def gguf_problem(path: Path) -> str | None:
    """What is wrong with the GGUF at `path`, as the end of a sentence ("is truncated: ..."), or None when its
    header, metadata and tensor table read through and the file holds every byte its tensors need.

    Read from the header alone (a memory map, no tensor data touched): a few tenths of a second for a 6 GB file
    with Qwen2's 151,000-token vocabulary, so the cache can check a file each time it hands one out.
    """
    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            if size < 24:
                return f"is truncated ({size} bytes, not even a GGUF header)"
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                needed = _gguf_end(data)
    except _Truncated:
        return f"is truncated (its header runs past the end of its {size} bytes)"
    except (ValueError, KeyError, OverflowError, struct.error) as exc:
        return f"is not a readable GGUF file ({exc})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if needed > size:
        return f"is truncated ({size:,} of its {needed:,} bytes)"
    return None


def _gguf_end(data: mmap.mmap) -> int:
    """The offset just past the last tensor's data, from the header of the GGUF in `data`."""
    if data[:4] != b"GGUF":
        raise ValueError("no GGUF magic")
    version, tensors, pairs = struct.unpack_from("<IQQ", data, 4)
    if version not in (2, 3) or tensors > 1 << 20 or pairs > 1 << 20:
        raise ValueError(f"version {version} with {tensors} tensors and {pairs} metadata keys")
    at, alignment = 24, _DEFAULT_ALIGNMENT
    for _ in range(pairs):
        key, at = _gguf_string(data, at)
        (kind,), at = _unpack(data, "<I", at)
        if key == b"general.alignment" and kind == 4:
            (alignment,) = struct.unpack_from("<I", data, at)
            if alignment < 1:
                raise ValueError("alignment 0")
        at = _skip_value(data, kind, at)
    gguf = import_gguf()
    ends = []
    for _ in range(tensors):
        _name, at = _gguf_string(data, at)
        (dims,), at = _unpack(data, "<I", at)
        if dims > 8:
            raise ValueError(f"a tensor of {dims} dimensions")
        shape, at = _unpack(data, f"<{dims}Q", at)
        (kind, offset), at = _unpack(data, "<IQ", at)
        block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        count = 1
        for dim in shape:
            count *= dim
        ends.append(offset + count // block * block_bytes)
    start = -(-at // alignment) * alignment
    return start + max(ends, default=0)


def _unpack(data: mmap.mmap, layout: str, at: int) -> tuple[tuple[Any, ...], int]:
    width = struct.calcsize(layout)
    if at + width > len(data):
        raise _Truncated()
    return struct.unpack_from(layout, data, at), at + width


def _gguf_string(data: mmap.mmap, at: int) -> tuple[bytes, int]:
    (length,), at = _unpack(data, "<Q", at)
    if at + length > len(data):
        raise _Truncated()
    return data[at:at + length], at + length


def _skip_value(data: mmap.mmap, kind: int, at: int) -> int:
    if kind == _STRING:
        (length,), at = _unpack(data, "<Q", at)
        return at + length
    if kind == _ARRAY:
        (item, count), at = _unpack(data, "<IQ", at)
        if item in _SCALAR_BYTES:
            return at + count * _SCALAR_BYTES[item]
        if item != _STRING:
            raise ValueError(f"an array of metadata type {item}")
        for _ in range(count):  # Qwen2's vocabulary and merges: 300,000 lengths to step over
            (length,), at = _unpack(data, "<Q", at)
            at += length
        return at
    if kind not in _SCALAR_BYTES:
        raise ValueError(f"metadata type {kind}")
    return at + _SCALAR_BYTES[kind]


# -- where files live ------------------------------------------------------------------------------------------

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


def cached_path(folder: Path, kind: str, *, prefix: str = "", directory: Path | None = None) -> Path:
    """Where the cache keeps this checkpoint's file of `kind` (a type such as "q8_0"), whether or not it has
    been written yet."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in display_name(Path(folder))) or "model"
    return (directory or cache_dir()) / f"{prefix}{name}-{checkpoint_key(folder)}-{kind}.gguf"


def display_name(folder: Path) -> str:
    """The folder's name, or the repo's for a Hugging Face snapshot (models--org--name/snapshots/<commit>)."""
    folder = folder.resolve()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name
