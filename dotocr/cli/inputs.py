"""Turning the PATH arguments of `dotocr ocr` into a list of inputs (images and PDFs).

Globs are expanded here rather than by the shell so `dotocr ocr shots\\*.png` works in Windows cmd,
which passes the pattern through untouched. Folders contribute the images directly inside them,
sorted by name; a file named explicitly is always tried, whatever its extension, so a mislabelled
image still gets its chance and a non-image gets a clear error from the engine.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STDIN_NAME = "-"
IMAGE_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".jp2", ".avif", ".heic",
})
INPUT_SUFFIXES = IMAGE_SUFFIXES | {".pdf"}
_COMMON_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".gif", ".pdf")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputImage:
    name: str
    """How the user will recognise it: the path as found, or "-" for stdin."""
    source: Path | bytes

    @property
    def path(self) -> Path | None:
        return self.source if isinstance(self.source, Path) else None


@dataclass
class ExpandedInputs:
    images: list[InputImage]
    problems: list[str]
    """One sentence per argument that yielded nothing usable."""


def expand_inputs(arguments: list[str], read_stdin: Callable[[], bytes] | None = None) -> ExpandedInputs:
    """Files, folders, globs and "-", in the order given, each image once."""
    read_stdin = read_stdin or _read_stdin
    images: list[InputImage] = []
    problems: list[str] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            images.append(InputImage(str(path), path))

    for argument in arguments:
        if argument == STDIN_NAME:
            if STDIN_NAME in seen:
                continue
            seen.add(STDIN_NAME)
            try:
                data = read_stdin()
            except OSError as exc:
                problems.append(f"standard input could not be read ({exc.strerror or exc}).")
                continue
            except _StdinIsTerminal:
                problems.append("standard input is the terminal, not an image; pipe one in, e.g. "
                                "`dotocr ocr - < shot.png`.")
                continue
            if not data:
                problems.append("standard input was empty; pipe an image into `dotocr ocr -`.")
                continue
            images.append(InputImage(STDIN_NAME, data))
            continue
        path = Path(argument)
        if path.is_dir():
            found = images_in_folder(path)
            if not found:
                problems.append(f"{argument}: the folder holds no images or PDFs "
                                f"(looked for {', '.join(_COMMON_SUFFIXES)}, ...).")
            for item in found:
                add(item)
        elif path.exists():
            add(path)
        elif _is_glob(argument):
            matches = [Path(m) for m in sorted(glob.glob(argument, recursive=True))]
            files = [m for m in matches if m.is_file()]
            if not files:
                problems.append(f"{argument}: no files match this pattern.")
            for item in files:
                add(item)
        else:
            problems.append(f"{argument}: no such file or folder.")
    return ExpandedInputs(images, problems)


class _StdinIsTerminal(Exception):
    pass


def _read_stdin() -> bytes:
    """All of stdin as bytes; never waits on a person typing at a terminal."""
    stream = sys.stdin
    if stream is None:
        return b""
    if stream.isatty():
        raise _StdinIsTerminal
    return stream.buffer.read()


def images_in_folder(folder: Path) -> list[Path]:
    """Image and PDF files directly inside `folder` (not its subfolders), sorted by name."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted((p for p in entries if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES),
                  key=lambda p: p.name)


def _is_glob(text: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in text)
