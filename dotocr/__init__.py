"""dotocr: local screen OCR on the dots.ocr vision-language model."""

import os

# Before anything can initialise CUDA (torch reads it then): fewer out-of-memory errors from fragmentation on
# small GPUs. A value the user set is kept.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def _installed_version() -> str:
    """The one version of the package: what pyproject.toml says, as installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dotocr")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


__version__ = _installed_version()
