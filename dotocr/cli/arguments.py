"""The `dotocr` command line's arguments: one parser, shared by `main` and the docs."""

from __future__ import annotations

import argparse
from pathlib import Path

from dotocr.config import add_engine_arguments, add_setting_argument
from dotocr.version import VersionAction


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """`X1,Y1,X2,Y2` in input-image pixels: the box the grounding prompt reads, by the engine's box rule."""
    from dotocr.engine import parse_box  # here: `dotocr --help` must not pay for the engine's imports
    from dotocr.errors import DotOCRError

    try:
        return parse_box(text)
    except DotOCRError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dotocr",
        description="Local OCR on the dots.ocr model.",
        epilog="Run `dotocr COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ocr = commands.add_parser(
        "ocr", help="recognise the text in image files",
        description="Recognise the text in images: files, folders (the images inside, sorted), globs "
                    "such as 'shots/*.png' (expanded here, so quoting works on every shell), "
                    "and - for an image on standard input.",
        epilog="Exit status: 0 all images done, 1 some failed, 2 bad usage, 130 interrupted.")
    ocr.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder, glob, or - for stdin")
    add_setting_argument(ocr, "prompt", help="what to ask the model: plain text, layout as Markdown, layout "
                                             "cells as JSON, or the text inside --bbox")
    ocr.add_argument("--bbox", type=parse_bbox, metavar="X1,Y1,X2,Y2",
                     help="box to read, in input-image pixels (implies --prompt grounding)")
    add_setting_argument(ocr, "output_format")
    ocr.add_argument("--out", type=Path, metavar="DIR",
                     help="write one file per image into DIR (name.txt, .md or .json) instead of stdout; "
                          "an existing file there is left alone and that image fails, unless --overwrite")
    ocr.add_argument("--overwrite", action="store_true",
                     help="with --out: replace result files that already exist")
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
