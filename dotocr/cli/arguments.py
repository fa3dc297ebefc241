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


def parse_pages(text: str) -> list[int]:
    """`1-3,7`: the PDF pages to read, 1-based."""
    from dotocr.engine import parse_page_ranges

    try:
        return parse_page_ranges(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_dpi(text: str) -> float:
    from dotocr.engine import check_dpi

    try:
        return check_dpi(float(text))
    except ValueError as exc:
        message = str(exc) if "DPI" in str(exc) else f"{text!r} is not a number"
        raise argparse.ArgumentTypeError(message) from None


def parse_concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"{value} must be from 1 to {MAX_CONCURRENCY}")
    return value


MAX_CONCURRENCY = 256
DEFAULT_REMOTE_CONCURRENCY = 8
"""Requests in flight against a remote engine: enough to keep vLLM's batch busy, few enough for one GPU."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dotocr",
        description="Local OCR on the dots.ocr model.",
        epilog="Run `dotocr COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ocr = commands.add_parser(
        "ocr", help="recognise the text in image files and PDFs",
        description="Recognise the text in images and PDFs: files, folders (the images and PDFs inside, "
                    "sorted), globs such as 'shots/*.png' (expanded here, so quoting works on every shell), "
                    "and - for an image or PDF on standard input. PDF pages are rendered at 200 DPI, as "
                    "dots.ocr's own parser does.",
        epilog="Exit status: 0 all images done, 1 some failed, 2 bad usage, 130 interrupted.")
    ocr.add_argument("paths", nargs="+", metavar="PATH", help="image or PDF file, folder, glob, or - for stdin")
    add_setting_argument(ocr, "prompt", help="what to ask the model: plain text, layout as Markdown, layout "
                                             "cells as JSON, or the text inside --bbox")
    ocr.add_argument("--bbox", type=parse_bbox, metavar="X1,Y1,X2,Y2",
                     help="box to read, in input-image pixels (implies --prompt grounding)")
    add_setting_argument(ocr, "output_format")
    ocr.add_argument("--out", type=Path, metavar="DIR",
                     help="write one file per image or PDF into DIR (name.txt, .md or .json) instead of stdout; "
                          "an existing file there is left alone and that input fails, unless --overwrite")
    ocr.add_argument("--overwrite", action="store_true",
                     help="with --out: replace result files that already exist")
    ocr.add_argument("--pages", type=parse_pages, metavar="LIST",
                     help="PDF pages to read, e.g. 1-3,7 (default: all)")
    ocr.add_argument("--dpi", type=parse_dpi, metavar="DPI",
                     help="PDF rendering resolution (default 200, as dots.ocr's parser; lower for a page that "
                          "would exceed the model's pixel limit)")
    ocr.add_argument("--concurrency", type=parse_concurrency, metavar="N",
                     help=f"requests in flight with a remote engine (default {DEFAULT_REMOTE_CONCURRENCY} for "
                          "engine = \"remote\", 1 otherwise: a local model reads one page at a time)")
    ocr.add_argument("--pictures", choices=("drop", "embed", "link"), default="drop",
                     help="Markdown: leave pictures out (default), embed them as PNG data URLs, or save them "
                          "next to the output (needs --out) and link them")
    ocr.add_argument("--no-page-furniture", action="store_true",
                     help="Markdown: leave out page headers and footers (running heads, page numbers)")
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
        "convert-gguf", help="write the model as GGUF files (decoder + mmproj) for llama.cpp or Ollama",
        description="Write the decoder of a dots.ocr checkpoint as a llama.cpp GGUF (architecture qwen2, "
                    "tokenizer included) and its vision tower as an mmproj (llama.cpp's dots_ocr projector), "
                    "once: later runs reuse the cached files. Prints the files' paths, decoder first. Use them "
                    "with `llama-server -m DECODER --mmproj MMPROJ`.",
        epilog="Exit status: 0 written (or already there), 1 failed, 2 bad usage.")
    convert.add_argument("model", metavar="MODEL", help="checkpoint folder or Hugging Face repo id")
    convert.add_argument("--gguf-type", "--quant", dest="quant", default="q8_0", metavar="TYPE",
                         help="f32, f16, q8_0 (default) or q4_k_m; q8_0 and q4_k_m are quantised by llama.cpp "
                              "itself and need llama-cpp-python")
    convert.add_argument("--mmproj-type", default="bf16", metavar="TYPE",
                         help="bf16 (default; lossless for the BF16 dots.ocr weights), f16, f32, or none to "
                              "write no mmproj")
    convert.add_argument("--output", type=Path, metavar="PATH",
                         help="also copy the files to PATH: a folder to put them in, or the decoder's file name "
                              "(the mmproj goes beside it as mmproj-NAME)")
    convert.add_argument("-v", "--verbose", action="store_true", help="log what the conversion does")
    return parser
