"""`dotocr convert-gguf MODEL`: the decoder and the vision tower as GGUF files, with progress and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys


def run_convert(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="dotocr: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("dotocr.engine.llamacpp").setLevel(logging.WARNING)  # llama.cpp's per-tensor lines
        logging.getLogger("gguf").setLevel(logging.WARNING)  # the gguf package's notes on what it writes
    from dotocr.engine import convert_gguf
    from dotocr.errors import DotOCRError

    try:
        mmproj = None if args.mmproj_type.lower() == "none" else args.mmproj_type.lower()
        paths = convert_gguf(args.model, args.quant.lower(), mmproj_type=mmproj, output=args.output)
    except DotOCRError as exc:
        print(f"dotocr: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
