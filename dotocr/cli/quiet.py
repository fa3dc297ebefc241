"""Keeping library chatter off the command line's stderr, which belongs to our own one-line messages.

transformers logs advice meant for developers and draws a "Loading weights" bar on every start;
neither helps a person running `dotocr ocr`. A first download's progress bar does help, so on a
terminal it stays. `--verbose` leaves everything as the libraries want it.
"""

from __future__ import annotations


def quiet_libraries(*, keep_download_bars: bool) -> None:
    import huggingface_hub.utils
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # also turns off huggingface_hub's bars ...
    if keep_download_bars:
        huggingface_hub.utils.enable_progress_bars()  # ... which a first download on a terminal wants
