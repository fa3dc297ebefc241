"""Pictures that do not come from the overlay: an image file (or a PDF's pages) and the clipboard's picture.

Each is a `Pictures` callable, run on the read's worker thread (reading the clipboard starts xclip on X11 and
may wait on a slow clipboard owner; a PDF renders page by page), so the Tk thread never waits. A missing
picture raises a `PictureError` with one sentence, shown like any failed read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dotocr.engine import DEFAULT_DPI, PdfDocument, is_pdf
from dotocr.errors import DotOCRError

Pictures = Callable[[], Sequence[Any]]
"""The pictures of one read (a file path or PIL image each), produced on the worker thread."""

MAX_TRAY_PAGES = 50
"""A PDF longer than this is refused: read one page at a time in the tray, it would hold the model for an hour
on a CPU. `dotocr ocr` reads any range of pages."""

IMAGE_FILE_TYPES = (
    ("Pictures and PDFs", "*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.pdf"),
    ("All files", "*"),
)
"""What the file dialog offers; any other file is still tried, and refused in one sentence if it is no picture."""

NO_PICTURE = ("The clipboard holds no picture; copy one (for example with a screenshot tool) and choose "
              "\"OCR the clipboard's picture\" again.")


class PictureError(DotOCRError):
    """There is no picture to read; the message says what to do."""


def file_pictures(path: Path) -> Pictures:
    """The picture in an image file, or each page of a PDF (rendered as dotocr ocr renders them)."""

    def pictures() -> Sequence[Any]:
        if not path.is_file():
            raise PictureError(f"{path} is not a file that can be opened; choose another.")
        if is_pdf(path):
            return PdfPages(path)
        return [path]  # the engine reads the file and says in one sentence when it is not a picture

    return pictures


class PdfPages(Sequence[Any]):
    """A PDF's pages, rendered one at a time as the read reaches them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with PdfDocument(path, name=path.name) as document:
            self._count = document.page_count
        if self._count > MAX_TRAY_PAGES:
            raise PictureError(f"{path.name} has {self._count} pages, more than the {MAX_TRAY_PAGES} the tray reads "
                               f"at once; read it with `dotocr ocr \"{path}\" --pages 1-{MAX_TRAY_PAGES}`.")

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        with PdfDocument(self.path, name=self.path.name) as document:
            return document.render(range(1, self._count + 1)[index], DEFAULT_DPI).image

    def __iter__(self) -> Iterator[Any]:
        with PdfDocument(self.path, name=self.path.name) as document:
            for number in range(1, self._count + 1):
                yield document.render(number, DEFAULT_DPI).image


def clipboard_pictures(grab: Callable[[], Any] | None = None) -> Pictures:
    """The clipboard's picture (Windows, macOS; X11 through xclip, Wayland through wl-paste). A copied image file
    (Explorer puts file names on the clipboard) is read as that file."""

    def pictures() -> Sequence[Any]:
        content = _grab_clipboard(grab)
        if isinstance(content, list | tuple):
            files = [Path(name) for name in content if isinstance(name, str | os.PathLike)]
            files = [f for f in files if f.is_file()]
            if not files:
                raise PictureError(NO_PICTURE)
            return file_pictures(files[0])()
        if content is None:
            raise PictureError(NO_PICTURE)
        return [content]

    return pictures


def _grab_clipboard(grab: Callable[[], Any] | None) -> Any:
    if grab is None:
        from PIL import ImageGrab

        grab = ImageGrab.grabclipboard
    try:
        return grab()
    except NotImplementedError:  # Linux without xclip or wl-paste
        raise PictureError("Reading a picture from the clipboard needs xclip (X11) or wl-clipboard (Wayland); "
                           "install one and try again.") from None
    except OSError as exc:  # a picture in a format Pillow cannot open
        raise PictureError(f"The clipboard's content could not be read as a picture ({exc}).") from None


def ask_image_file(root: Any) -> Path | None:
    """The file dialog of "OCR an image file…" (Tk thread); None when the person closes it."""
    from tkinter import filedialog

    chosen = filedialog.askopenfilename(parent=root, title="OCR an image file", filetypes=IMAGE_FILE_TYPES)
    return Path(chosen) if chosen else None
