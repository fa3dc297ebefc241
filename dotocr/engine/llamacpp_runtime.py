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


__all__ = ["INSTALL_HINT", "PINNED_VERSION", "LlamaCppUnavailableError", "llamacpp_available", "load_bindings",
           "recent_llama_errors"]
