"""llama.cpp as a library: importing llama-cpp-python's low-level bindings once, with its logs kept quiet.

The bindings' ctypes structs are written by hand against the llama.cpp they ship, so only the pinned version
is accepted: another one could lay a struct out differently and corrupt memory instead of failing.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from types import ModuleType

from ..errors import DotOCRError

log = logging.getLogger("dotocr.engine.llamacpp")

PINNED_VERSION = "0.3.36"
INSTALL_HINT = f'pip install "llama-cpp-python=={PINNED_VERSION}" (or pip install "dotocr[llamacpp]")'

_lock = threading.Lock()
_bindings: ModuleType | None = None
_log_callback = None  # kept referenced: llama.cpp holds the C pointer for the life of the process
_recent_errors: list[str] = []


class LlamaCppUnavailableError(DotOCRError):
    """llama-cpp-python is missing or is not the version these bindings are written for."""


def llamacpp_installed() -> bool:
    """Whether the pinned llama-cpp-python and the GGUF writer are installed, without importing either
    (the decoder choice asks this; importing llama.cpp loads its shared library)."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("gguf") is None:
        return False
    try:
        return importlib.metadata.version("llama-cpp-python") == PINNED_VERSION
    except importlib.metadata.PackageNotFoundError:
        return False


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build can run layers on a GPU (CUDA, Vulkan); imports the bindings."""
    try:
        return bool(load_bindings().llama_supports_gpu_offload())
    except LlamaCppUnavailableError:
        return False


def describe_llamacpp() -> dict[str, object]:
    """What `dotocr doctor` reports: the installed llama-cpp-python and gguf, and whether the build offloads to a
    GPU (asked only of the pinned version: importing another one is what the pin guards against)."""
    import importlib.metadata
    import importlib.util

    try:
        version: str | None = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = None
    info: dict[str, object] = {"version": version, "pinned": PINNED_VERSION,
                               "gguf": importlib.util.find_spec("gguf") is not None, "gpu_offload": None,
                               "error": None}
    if version == PINNED_VERSION:
        try:
            info["gpu_offload"] = bool(load_bindings().llama_supports_gpu_offload())
        except LlamaCppUnavailableError as exc:
            info["error"] = str(exc)
    return info


def llamacpp_available() -> bool:
    """Whether the pinned llama-cpp-python can be imported (imports it)."""
    try:
        load_bindings()
    except LlamaCppUnavailableError:
        return False
    return True


def load_bindings() -> ModuleType:
    """`llama_cpp.llama_cpp` with the backend initialised and llama.cpp's logs routed to our logger.

    llama.cpp prints every tensor it loads to stderr by default; that goes to our log at debug level instead.
    """
    global _bindings
    with _lock:
        if _bindings is not None:
            return _bindings
        try:
            import llama_cpp
            from llama_cpp import llama_cpp as bindings
        except ImportError as exc:
            raise LlamaCppUnavailableError(
                f"The llama.cpp decoder needs llama-cpp-python, which is not installed ({exc}); {INSTALL_HINT}."
            ) from None
        version = getattr(llama_cpp, "__version__", "unknown")
        if version != PINNED_VERSION:
            raise LlamaCppUnavailableError(
                f"llama-cpp-python {version} is installed but dotocr is written for {PINNED_VERSION}; "
                f"{INSTALL_HINT}.")
        _route_logs(bindings)
        bindings.llama_backend_init()
        _bindings = bindings
        return bindings


def recent_llama_errors() -> str:
    """The last few error lines llama.cpp logged, to explain a failure it reports only by a return code."""
    return " ".join(line.strip() for line in _recent_errors[-3:] if line.strip())


def _route_logs(bindings: ModuleType) -> None:
    global _log_callback

    def forward(level: int, text: bytes | None, _user_data) -> None:
        message = (text or b"").decode("utf-8", "replace")
        if level == 3:  # GGML_LOG_LEVEL_ERROR
            _recent_errors.append(message)
            del _recent_errors[:-10]
        log.debug("%s", message.rstrip())

    _log_callback = bindings.llama_log_callback(forward)
    bindings.llama_log_set(_log_callback, ctypes.c_void_p(0))


__all__ = ["INSTALL_HINT", "PINNED_VERSION", "LlamaCppUnavailableError", "describe_llamacpp", "llamacpp_available",
           "load_bindings", "recent_llama_errors"]
