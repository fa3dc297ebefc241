"""dotocr: local screen OCR on the dots.ocr vision-language model."""

import os

# Before anything can initialise CUDA (torch reads it then): fewer out-of-memory errors from fragmentation on
# small GPUs. A value the user set is kept.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

__version__ = "0.1.0"
