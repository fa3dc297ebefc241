"""The GGUF files of a checkpoint, made once and kept in the data folder's cache, and `dotocr convert-gguf`.

`ensure_gguf` gives the llama.cpp decoder its weights (written or quantised on first use); `ensure_mmproj` the
vision tower for llama.cpp's own multimodal path; `convert_gguf` makes both for use elsewhere. Every file is
written through `storage.atomic_path`: a crash or a second process never leaves a half-written file where a
reader would take it, and two processes making the same file both succeed.

A cached file is checked each time it is handed out (`gguf_problem`: its header and tensor table read through and
every byte its tensors need is there, a few tenths of a second): one truncated or damaged since (a full disk, a
copy cut short, a bad sector) is set aside as `NAME.broken-DATE`, said in one line, and written again, rather
than failing every run with "llama.cpp could not load" for good.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from ...config import GGUF_TYPES
from ...storage import NORMAL_FILE, atomic_path, move_aside
from ..checkpoint import resolve_checkpoint
from ..llamacpp_runtime import load_bindings
from .base import GGUFExportError, cached_path, gguf_problem
from .decoder import WRITTEN_TYPES, quantize_gguf, source_is_f32, write_decoder_gguf
from .mmproj import check_mmproj_type, write_mmproj_gguf

log = logging.getLogger("dotocr.engine")


def gguf_path(folder: Path, gguf_type: str, *, directory: Path | None = None) -> Path:
    """Where the decoder GGUF of this checkpoint and type lives (whether or not it has been written yet)."""
    check_gguf_type(gguf_type)
    return cached_path(folder, gguf_type, directory=directory)


def mmproj_path(folder: Path, mmproj_type: str, *, directory: Path | None = None) -> Path:
    """Where the mmproj of this checkpoint and type lives (whether or not it has been written yet)."""
    check_mmproj_type(mmproj_type)
    return cached_path(folder, mmproj_type, prefix="mmproj-", directory=directory)


def check_gguf_type(gguf_type: str) -> None:
    if gguf_type not in GGUF_TYPES:
        raise GGUFExportError(f"Unknown GGUF type {gguf_type!r}; choose one of {', '.join(GGUF_TYPES)}.")


def ensure_gguf(folder: Path, gguf_type: str, *, directory: Path | None = None, progress: bool = True,
                n_threads: int | None = None, on_progress: Callable[[float], None] | None = None) -> Path:
    """The GGUF of `folder` in `gguf_type`, written (or quantised) now if it is not in the cache yet.

    `on_progress` gets the written fraction of the F16/F32 file (for the engine's state); quantising after it
    reports nothing, as llama.cpp's quantiser has no progress callback.
    """
    folder = Path(folder)
    target = gguf_path(folder, gguf_type, directory=directory)
    if usable_cached(target):
        return target
    try:
        return _make_gguf(folder, gguf_type, target, directory, progress, n_threads, on_progress)
    except OSError as exc:
        raise GGUFExportError(
            f"Could not write {target} ({exc.strerror or exc}); free some disk space (the file is about "
            "1-6 GB), or point DOTOCR_DATA_DIR at a drive with room.") from None


def _make_gguf(folder: Path, gguf_type: str, target: Path, directory: Path | None, progress: bool,
               n_threads: int | None, on_progress: Callable[[float], None] | None) -> Path:
    log.info("Writing the decoder of %s as a %s GGUF (once): %s", folder, gguf_type.upper(), target)
    if gguf_type in WRITTEN_TYPES:
        with atomic_path(target, mode=NORMAL_FILE) as tmp:
            write_decoder_gguf(folder, tmp, gguf_type, progress=progress, on_progress=on_progress)
        return target
    load_bindings()  # a missing llama.cpp is said before minutes of writing, not after
    # Quantise from an already cached F16/F32 file if there is one, else from a temporary one deleted afterwards.
    source_type = "f32" if source_is_f32(folder) else "f16"
    cached = gguf_path(folder, source_type, directory=directory)
    with contextlib.ExitStack() as stack:
        if usable_cached(cached):
            source = cached
        else:
            source = stack.enter_context(atomic_path(target.with_suffix(f".{source_type}.gguf"), keep=False))
            write_decoder_gguf(folder, source, source_type, progress=progress, on_progress=on_progress)
        log.info("Quantising to %s with llama.cpp", gguf_type.upper())
        with atomic_path(target, mode=NORMAL_FILE) as tmp:
            quantize_gguf(source, tmp, gguf_type, n_threads=n_threads)
    return target


def ensure_mmproj(folder: Path, mmproj_type: str = "bf16", *, directory: Path | None = None,
                  progress: bool = True) -> Path:
    """The mmproj of `folder`, written now if it is not in the cache yet (a few seconds; ~0.7-2.5 GB)."""
    folder = Path(folder)
    target = mmproj_path(folder, mmproj_type, directory=directory)
    if usable_cached(target):
        return target
    log.info("Writing the vision tower of %s as a %s mmproj (once): %s", folder, mmproj_type.upper(), target)
    try:
        with atomic_path(target, mode=NORMAL_FILE) as tmp:
            write_mmproj_gguf(folder, tmp, mmproj_type, progress=progress)
    except OSError as exc:
        raise GGUFExportError(f"Could not write {target} ({exc.strerror or exc}); free some disk space, or point "
                              "DOTOCR_DATA_DIR at a drive with room.") from None
    return target


def usable_cached(path: Path) -> bool:
    """Whether the cache's file at `path` can be handed out: it is there and whole. A damaged one is set aside (never
    deleted: it may be worth a look) so that it is written again, and the log says so in one line."""
    if not path.is_file():
        return False
    problem = gguf_problem(path)
    if problem is None:
        return True
    aside = move_aside(path)
    if aside is None:
        raise GGUFExportError(f"The cached GGUF {path} {problem} and could not be set aside; delete it, and it is "
                              "written again on the next run.")
    log.warning("The cached GGUF %s %s; it was set aside as %s and is written again.", path, problem, aside.name)
    return False


def cached_gguf_problem(path: Path) -> str | None:
    """For `dotocr doctor`: what is wrong with the cache's file at `path`, as the end of a sentence, or None when it is
    whole or not written yet. Nothing is moved."""
    return gguf_problem(path) if path.is_file() else None


def convert_gguf(model: str, gguf_type: str = "q8_0", *, mmproj_type: str | None = "bf16",
                 output: Path | None = None, progress: bool = True, n_threads: int | None = None) -> list[Path]:
    """`dotocr convert-gguf`: a checkpoint as GGUF files for llama.cpp or Ollama elsewhere.

    The decoder in `gguf_type`, and (unless `mmproj_type` is None) the vision tower as llama.cpp's dots_ocr
    mmproj. `model` is a folder or a Hugging Face repo id, as for OCR. The files are made in (or taken from) the
    cache; with `output` they are also copied there: into it if it is a folder, else the decoder to that name and
    the mmproj beside it as "mmproj-NAME". Returns where the files are, decoder first.
    """
    check_gguf_type(gguf_type)
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
    """A copy for the person who asked for it, with the usual mode (0666 less the umask), not a private one."""
    try:
        with atomic_path(output, mode=NORMAL_FILE) as tmp:
            shutil.copyfile(path, tmp)
    except OSError as exc:
        raise GGUFExportError(f"Could not write {output} ({exc.strerror or exc}); choose another --output.") from None
    return output


__all__ = ["GGUFExportError", "cached_gguf_problem", "check_gguf_type", "convert_gguf", "ensure_gguf", "ensure_mmproj",
           "gguf_path", "mmproj_path", "usable_cached"]
