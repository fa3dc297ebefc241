"""The `dotocr` command line's arguments: one parser, shared by `main` and the docs."""

from __future__ import annotations

import argparse
from pathlib import Path

from dotocr.config import OUTPUT_FORMATS, PROMPT_MODES, add_engine_arguments

Box = tuple[int, int, int, int]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("dotocr")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parse_bbox(text: str) -> Box:
    """`X1,Y1,X2,Y2` in input-image pixels: the box the grounding prompt reads."""
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not four numbers X1,Y1,X2,Y2")
    try:
        values = [round(float(p)) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not four numbers X1,Y1,X2,Y2") from None
    x1, y1, x2, y2 = values
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: coordinates cannot be negative")
    if x2 <= x1 or y2 <= y1:
        raise argparse.ArgumentTypeError(f"{text!r}: X2 must be greater than X1 and Y2 greater than Y1")
    return (x1, y1, x2, y2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dotocr",
        description="Local OCR on the dots.ocr model.",
        epilog="Run `dotocr COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"dotocr {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ocr = commands.add_parser(
        "ocr", help="recognise the text in image files",
        description="Recognise the text in images: files, folders (the images inside, sorted), globs "
                    "such as 'shots/*.png' (expanded here, so quoting works on every shell), "
                    "and - for an image on standard input.",
        epilog="Exit status: 0 all images done, 1 some failed, 2 bad usage, 130 interrupted.")
    ocr.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder, glob, or - for stdin")
    ocr.add_argument("--prompt", choices=PROMPT_MODES,
                     help="what to ask the model: plain text (default), layout as Markdown, layout cells "
                          "as JSON, or the text inside --bbox")
    ocr.add_argument("--bbox", type=parse_bbox, metavar="X1,Y1,X2,Y2",
                     help="box to read, in input-image pixels (implies --prompt grounding)")
    ocr.add_argument("--format", choices=OUTPUT_FORMATS, dest="output_format",
                     help="text (default), markdown, or json: one object per image per line")
    ocr.add_argument("--out", type=Path, metavar="DIR",
                     help="write one file per image into DIR (name.txt, .md or .json) instead of stdout")
    ocr.add_argument("--local", action="store_true",
                     help="load the model in this process even if a dotocr server is running")
    ocr.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    add_engine_arguments(ocr)

    doctor = commands.add_parser(
        "doctor", help="check this machine's setup",
        description="Check Python, torch, the GPU, bitsandbytes, the model cache, settings, hotkey, "
                    "clipboard and a running server. Exit status 1 when a check fails.")
    doctor.add_argument("--ocr", action="store_true",
                        help="also recognise a built-in sample with the real model and check the words")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON (for bug reports)")
    doctor.add_argument("--local", action="store_true",
                        help="with --ocr: load the model here even if a dotocr server is running")
    doctor.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    add_engine_arguments(doctor)

    convert = commands.add_parser(
        "convert-gguf", help="write the model's text decoder as a GGUF file for llama.cpp or Ollama",
        description="Write the decoder of a dots.ocr checkpoint as a llama.cpp GGUF (architecture qwen2, "
                    "tokenizer included), once: later runs reuse the cached file. The vision tower is not "
                    "included. Prints the file's path.",
        epilog="Exit status: 0 written (or already there), 1 failed, 2 bad usage.")
    convert.add_argument("model", metavar="MODEL", help="checkpoint folder or Hugging Face repo id")
    convert.add_argument("--quant", default="q8_0", metavar="TYPE",
                         help="f32, f16, q8_0 (default) or q4_k_m; q8_0 and q4_k_m are quantised by llama.cpp "
                              "itself and need llama-cpp-python")
    convert.add_argument("--output", type=Path, metavar="PATH",
                         help="also copy the file to PATH (a file name, or a folder to put it in)")
    convert.add_argument("-v", "--verbose", action="store_true", help="log what the conversion does")
    return parser
