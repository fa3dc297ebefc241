"""Where `dotocr ocr` puts each result: stdout, or one file per image under --out."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotocr.cli.inputs import STDIN_NAME, InputImage

SUFFIXES = {"text": ".txt", "markdown": ".md", "json": ".json"}


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

    def write(self, image: InputImage, data: dict[str, Any]) -> None:
        if self.output_format == "json":
            self._write_line(json_line(data))
            return
        text = str(data.get("text", "")).rstrip("\n")
        if self.batch:
            prefix = "\n" if self._count else ""
            shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in image.name)  # no forged headers
            self._write_line(f"{prefix}==> {shown} <==")
        self._write_line(text)
        self._count += 1


class FolderWriter:
    """One file per image in `folder`, named after the image with the format's suffix.

    Two images with the same stem (a.png, a.jpg) get a.txt and a.jpg.txt; a name that would land on
    one of the batch's own inputs is never used, so an input is never overwritten.
    """

    def __init__(self, folder: Path, output_format: str, inputs: list[InputImage]) -> None:
        self.folder = folder
        self.output_format = output_format
        self.suffix = SUFFIXES[output_format]
        self._taken = {_key(p) for p in (i.path for i in inputs) if p is not None}
        self.written: list[Path] = []

    def target_for(self, image: InputImage) -> Path:
        base = "stdin" if image.name == STDIN_NAME else Path(image.name).name
        stem = Path(base).stem or base
        candidates = [stem + self.suffix, base + self.suffix]
        candidates += [f"{stem}-{n}{self.suffix}" for n in range(2, 10_000)]
        for name in candidates:
            path = self.folder / name
            if _key(path) not in self._taken:
                self._taken.add(_key(path))
                return path
        raise OSError(f"no free file name for {image.name} in {self.folder}")

    def write(self, image: InputImage, data: dict[str, Any]) -> Path:
        target = self.target_for(image)
        if self.output_format == "json":
            content = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        else:
            content = str(data.get("text", "")).rstrip("\n") + "\n"
        tmp = target.with_name(target.name + ".part")
        tmp.write_text(content, encoding="utf-8", newline="\n")
        os.replace(tmp, target)
        self.written.append(target)
        return target


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))
