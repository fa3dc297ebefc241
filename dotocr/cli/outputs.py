"""Where `dotocr ocr` puts each result: stdout, or one file per input under --out.

A PDF gives one result per page. On stdout every page is written as soon as it is read (JSON: one line per
page, each carrying `page`); in text and Markdown the pages of one PDF are joined by PAGE_BREAKS. Under
--out a PDF becomes one file holding all its pages (JSON: a list of page objects), written when its last
page is done.
"""

from __future__ import annotations

import io
import json
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotocr.cli.inputs import STDIN_NAME, InputImage
from dotocr.storage import NORMAL_FILE, write_atomic

if TYPE_CHECKING:
    from PIL import Image

SUFFIXES = {"text": ".txt", "markdown": ".md", "json": ".json"}
PAGE_BREAKS = {"text": "\f", "markdown": "\n---\n"}
"""Between two pages of a PDF: a form feed in plain text (as pdftotext writes), a thematic break in Markdown."""


def shown_name(name: str) -> str:
    """A file name safe to print on one line: line breaks, other control characters and bidi overrides
    become escapes (\\n, \\x1b, \\u202e), so a crafted name cannot forge a `==> name <==` header or
    repaint the terminal. Backslashes stay as they are: they are Windows' path separator."""
    out = []
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
                       or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(char)
    return "".join(out)


def json_line(data: dict[str, Any]) -> str:
    """One result as one line: what `--format json` prints and scripts parse line by line."""
    return json.dumps(data, ensure_ascii=False)


class StdoutWriter:
    """Results on stdout. Text formats get a `==> name <==` header when there are several images,
    so a batch stays readable and splittable; JSON needs none (each object carries `file`)."""

    def __init__(self, output_format: str, batch: bool, write_line: Callable[[str], None]) -> None:
        self.output_format = output_format
        self.batch = batch
        self._write_line = write_line
        self._count = 0

    def write(self, image: InputImage, data: dict[str, Any], *, first_page: bool = True) -> None:
        if self.output_format == "json":
            self._write_line(json_line(data))
            return
        text = str(data.get("text", "")).rstrip("\n")
        if not first_page:
            self._write_line(PAGE_BREAKS[self.output_format])
        elif self.batch:
            prefix = "\n" if self._count else ""
            self._write_line(f"{prefix}==> {shown_name(image.name)} <==")
        self._write_line(text)
        self._count += 1

    def prepare(self, image: InputImage) -> None:
        """Nothing to check before reading an image: stdout always takes its result."""

    def finish(self, image: InputImage) -> None:
        """Nothing to do: every page went out as it came."""

    def finish_pending(self) -> list[tuple[Path, list[int]]]:
        """Nothing is kept back: every page went out as it came."""
        return []


class OutputExistsError(FileExistsError):
    """A result would replace a file that is already there; the message says what to do."""


class FolderWriter:
    """One file per image in `folder`, named after the image with the format's suffix.

    Two images with the same stem (a.png, a.jpg) get a.txt and a.jpg.txt; a name that would land on
    one of the batch's own inputs is never used, so an input is never overwritten. A file that already
    exists is replaced only with `overwrite` (--overwrite); otherwise that image fails with one sentence
    before it is read, and the check is repeated atomically when the result is written. Each result is
    written through dotocr.storage: a fresh temporary file, never a planted one, renamed into place.
    """

    def __init__(self, folder: Path, output_format: str, inputs: list[InputImage], *,
                 overwrite: bool = False) -> None:
        self.folder = folder
        self.output_format = output_format
        self.suffix = SUFFIXES[output_format]
        self.overwrite = overwrite
        self._inputs = {_key(p) for p in (i.path for i in inputs) if p is not None}
        self._taken = set(self._inputs)
        self._targets: dict[int, Path] = {}
        self._next_number: dict[str, int] = {}
        self._pages: dict[int, list[dict[str, Any]]] = {}
        self.written: list[Path] = []
        for image in inputs:  # names for the whole batch, in input order: pictures saved beside can use them
            self.target_for(image)

    def target_for(self, image: InputImage) -> Path:
        """The file this image's result goes to, the same on every call for the same image.

        `NAME.txt`, else `NAME.png.txt`, else `NAME-2.txt`, `NAME-3.txt`, ...: the next number is remembered per
        name, so 10,000 inputs called page.png are named in linear time, and there is always a next one.
        """
        known = self._targets.get(id(image))
        if known is not None:
            return known
        base = "stdin" if image.name == STDIN_NAME else Path(image.name).name
        stem = Path(base).stem or base
        for name in (stem + self.suffix, base + self.suffix):
            if self._claim(image, name):
                return self._targets[id(image)]
        number = self._next_number.get(stem, 2)
        while not self._claim(image, f"{stem}-{number}{self.suffix}"):
            number += 1  # taken by an input or an earlier result: each name is passed over once in a batch
        self._next_number[stem] = number + 1
        return self._targets[id(image)]

    def _claim(self, image: InputImage, name: str) -> bool:
        path = self.folder / name
        key = _key(path)
        if key in self._taken:
            return False
        self._taken.add(key)
        self._targets[id(image)] = path
        return True

    def prepare(self, image: InputImage) -> None:
        """Refuse, before the image is read, a result that would replace an existing file."""
        target = self.target_for(image)
        if not self.overwrite and os.path.lexists(target):
            raise self._exists(target)

    def write(self, image: InputImage, data: dict[str, Any], *, first_page: bool = True) -> Path | None:
        """An image's result is written at once; a PDF page's is kept until `finish`."""
        if data.get("page") is None:
            return self._store(self.target_for(image), self._content([data], document=False))
        self._pages.setdefault(id(image), []).append(data)
        return None

    def finish(self, image: InputImage) -> Path | None:
        """Write a PDF's pages (those that were read) into its one file."""
        pages = self._pages.pop(id(image), None)
        if not pages:
            return None
        return self._store(self.target_for(image), self._content(pages, document=True))

    def finish_pending(self) -> list[tuple[Path, list[int]]]:
        """Write the pages read so far of every PDF not finished (the run was interrupted): (its file, the pages
        in it) for each, so Ctrl-C never throws away what was read."""
        written = []
        for key, pages in list(self._pages.items()):
            del self._pages[key]
            target = self._store(self._targets[key], self._content(pages, document=True))
            written.append((target, [int(page["page"]) for page in pages]))
        return written

    def save_picture(self, image: InputImage, page: int | None, number: int, crop: Image.Image) -> str:
        """Store a picture cut from a page beside its result (`--pictures link`) and return the name the Markdown
        links to: written like a result (never through a planted file, never over an existing one without
        --overwrite, never over an input)."""
        target = self.target_for(image)
        name = f"{target.stem}{f'-p{page}' if page is not None else ''}-picture{number}.png"
        path = target.with_name(name)
        if _key(path) in self._inputs:
            raise OutputExistsError(f"{shown_name(str(path))} is one of this batch's inputs; choose another --out "
                                    "folder.")
        png = io.BytesIO()
        crop.save(png, format="PNG")
        self._store(path, png.getvalue())
        return name

    def _content(self, results: list[dict[str, Any]], *, document: bool) -> str:
        if self.output_format == "json":
            value: Any = results if document else results[0]
            return json.dumps(value, ensure_ascii=False, indent=2) + "\n"
        texts = [str(r.get("text", "")).rstrip("\n") for r in results]
        return ("\n" + PAGE_BREAKS[self.output_format] + "\n").join(texts) + "\n"

    def _store(self, target: Path, content: str | bytes) -> Path:
        data = content.encode("utf-8", "replace") if isinstance(content, str) else content
        try:
            write_atomic(target, data, mode=NORMAL_FILE, overwrite=self.overwrite)
        except FileExistsError:
            raise self._exists(target) from None
        self.written.append(target)
        return target

    @staticmethod
    def _exists(target: Path) -> OutputExistsError:
        return OutputExistsError(f"{shown_name(str(target))} already exists; pass --overwrite to replace it or "
                                 "choose another --out folder.")


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))
