"""dotocr: local screen OCR on the dots.ocr vision-language model."""

import os

# Before anything can initialise CUDA (torch reads it then): fewer out-of-memory errors from fragmentation on
# small GPUs. A value the user set is kept.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def __getattr__(name: str) -> str:
    """`dotocr.__version__`, looked up on first use (see `dotocr.version`)."""
    if name == "__version__":
        from dotocr.version import package_version

        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
