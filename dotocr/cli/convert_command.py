"""`dotocr convert-gguf MODEL`: the decoder as a GGUF file, with a progress bar and one line per problem."""

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
        path = convert_gguf(args.model, args.quant.lower(), output=args.output)
    except DotOCRError as exc:
        print(f"dotocr: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
