"""The platform pieces the tray drives (clipboard, toasts, history, hotkey, overlay, ...), in one bundle.

app.py picks the real ones for this OS; display-free unit tests pass fakes. Nothing here holds tray state.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from dotocr.tray.choices import CudaFacts

log = logging.getLogger(__name__)

RegionDone = Callable[[Any, "Image.Image | None"], None]
WindowFactory = Callable[[Any, Callable[[], None]], Any]
"""Opens the result window for a `Reading` (Tk thread); the callable stops the read (result_display.py)."""


class Notifier(Protocol):
    def notify(self, title: str, text: str) -> None: ...


@dataclass
class Services:
    clipboard: Any
    """`copy(text) -> bool` (never writes empty text)."""
    notifier: Notifier
    history: Any
    """`dotocr.tray.history.History`."""
    autostart: Any | None = None
    hotkey: Any | None = None
    """A hotkey backend (`register(hotkey, callback)`, `unregister()`), None where none works."""
    hotkey_unavailable: str = ""
    """Why there is no hotkey backend, when `hotkey` is None."""
    select_region: Callable[[RegionDone], None] | None = None
    """Opens the overlay on the Tk thread; calls back once with (region, crop) or (None, None)."""
    cancel_selection: Callable[[], None] | None = None
    """Closes an open overlay as a cancel (its callback then gets (None, None)); Tk thread."""
    grab_region: Callable[[Any], Image.Image] | None = None
    """Grabs a saved region's desktop rectangle again, for "Repeat last region"."""
    open_file: Callable[[Path], bool] | None = None
    cuda_probe: Callable[[], CudaFacts] | None = None
    """What the GPU can do; runs on the loader thread. None: ask PyTorch (engine_host.probe_cuda)."""
    open_result_window: WindowFactory | None = None
    """The result window (Tk); None where none can be drawn: every read ends in a toast."""
    schedule: Callable[[int, Callable[[], None]], Any] | None = None
    """Tk's `after`: runs a callable on the Tk thread after some milliseconds ("auto"'s delay)."""
    toasts_visible: Callable[[], bool] | None = None
    """Whether a toast can be seen here (toast_visibility.py); None: assume it can."""
    ask_image_file: Callable[[], Path | None] | None = None
    """The file dialog of "OCR an image file…" (Tk thread); None where there is none."""
    grab_clipboard_picture: Callable[[], Any] | None = None
    """What the clipboard holds, as PIL's ImageGrab.grabclipboard() answers; None: that function."""
    pointer: Callable[[], tuple[int, int]] | None = None
    """The pointer's desktop position, where a read without a region shows its window."""


def open_with_os(path: Path) -> bool:
    """Open a file with the desktop's default app; False when there is no opener (never raises)."""
    try:
        if sys.platform == "win32":
            os.startfile(path)  # type: ignore[attr-defined]
            return True
        opener = "open" if sys.platform == "darwin" else "xdg-open"
        if shutil.which(opener) is None:
            return False
        subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        return True
    except OSError as exc:
        log.warning("Could not open %s: %s", path, exc)
        return False
