"""What `--model` names: a checkpoint folder on this machine, or a Hugging Face repo in the cache or still to
download. Only weights, configs and tokenizer files are ever fetched (`CHECKPOINT_PATTERNS`), never code."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailableError, one_line

CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]  # never *.py
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class CheckpointInfo:
    """What `--model` names, found without downloading: the rules `resolve_checkpoint` applies, for `doctor`."""

    model: str
    kind: str
    """"folder" (a path on this machine) or "repo" (a Hugging Face repo id)."""
    path: Path | None
    """The folder, or a repo's snapshot in the Hugging Face cache; None for a repo not cached yet."""
    problem: str | None = None
    """The one sentence loading would fail with, if it will."""


_MOCR_NAME = re.compile(r"dots[._\-\s]?mocr", re.IGNORECASE)


def is_dots_mocr(model: str) -> bool:
    """Whether `model` names dots.mocr (or dots.mocr-svg), by its name: dots.mocr's config.json is dots.ocr's, word
    for word (same architecture, `model_type` dots_ocr), so the checkpoint cannot tell. The repo id
    (rednote-hilab/dots.mocr), a folder (DotsMOCR, as its README asks, dots_mocr, dots-mocr) or a Hugging Face cache
    path (models--rednote-hilab--dots.mocr) anywhere in the name counts."""
    return _MOCR_NAME.search(model) is not None


def describe_checkpoint(model: str) -> CheckpointInfo:
    """Folder, cached repo or repo still to download; never touches the network."""
    path = Path(model).expanduser()
    if path.is_dir():
        problem = None if (path / "config.json").exists() else (
            f"The folder {path} holds no config.json; point --model at a dots.ocr checkpoint folder.")
        return CheckpointInfo(model, "folder", path, problem)
    if not _REPO_ID.match(model) or path.exists():
        return CheckpointInfo(model, "folder", None, (
            f"The model folder {model} does not exist; pass an existing checkpoint folder or a Hugging Face "
            "repo id such as rednote-hilab/dots.ocr."))
    from huggingface_hub import snapshot_download

    try:
        snapshot: Path | None = Path(snapshot_download(model, allow_patterns=CHECKPOINT_PATTERNS,
                                                       local_files_only=True))
    except Exception:  # not (completely) cached
        snapshot = None
    return CheckpointInfo(model, "repo", snapshot)


def resolve_checkpoint(model: str, on_progress: Callable[[float], None] | None = None) -> Path:
    """A local folder as is; a repo id from the Hugging Face cache, downloading (resumably) if needed."""
    info = describe_checkpoint(model)
    if info.problem:
        raise ModelUnavailableError(info.problem)
    if info.path is not None:
        return info.path
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import ENDPOINT, HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise ModelUnavailableError(
            f"The model {model} is not in the Hugging Face cache and offline mode (HF_HUB_OFFLINE) is on; "
            "download it once online, or pass a local checkpoint folder with --model.")
    try:
        kwargs: dict[str, Any] = {"allow_patterns": CHECKPOINT_PATTERNS}
        if on_progress is not None:
            kwargs["tqdm_class"] = _progress_tqdm(on_progress)
        return Path(snapshot_download(model, **kwargs))
    except Exception as exc:
        raise ModelUnavailableError(
            f"The model {model} cannot be downloaded from {ENDPOINT} ({_download_problem(exc)}); check the network "
            "or set HF_ENDPOINT to a mirror, or download the checkpoint elsewhere and pass its folder with --model."
        ) from None


def _download_problem(exc: BaseException) -> str:
    """Why a download failed, in words: "no connection" when the hub could not be reached at all (the first thing a
    person on a closed network sees), else the library's own message."""
    seen: BaseException | None = exc
    for _ in range(10):  # the hub wraps its transport's error a few levels deep
        if seen is None:
            break
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in ("ConnectError",
                                                                                     "ConnectTimeout"):
            return "no connection to it"
        seen = seen.__cause__ or seen.__context__
    return one_line(exc, 200)


def _progress_tqdm(on_progress: Callable[[float], None]):
    from tqdm.auto import tqdm

    class ProgressTqdm(tqdm):
        """Forwards byte progress to the engine's state while keeping the usual console bar."""

        def update(self, n=1):
            result = super().update(n)
            if self.total and getattr(self, "unit", "") == "B":
                on_progress(min(1.0, self.n / self.total))
            return result

    return ProgressTqdm
