"""Keeping library chatter off the command line's stderr, which belongs to our own one-line messages.

transformers logs advice meant for developers and draws a "Loading weights" bar on every start (the engine
turns that one off when it loads); neither helps a person running `dotocr ocr`. A first download's progress
bar does help, so on a terminal it stays. `--verbose` leaves everything as the libraries want it. Only
environment variables are set: the libraries read them when (and if) they are imported, so a run that talks
to a server never imports them.
"""

from __future__ import annotations

import os


def quiet_libraries(*, keep_download_bars: bool) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not keep_download_bars:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
