"""The `dotocr` command: `dotocr ocr PATH...`, `dotocr doctor` and `dotocr convert-gguf MODEL`.

Kept light at import time: torch and transformers load only once a subcommand needs them, so
`dotocr --help` and usage errors answer at once.
"""

from __future__ import annotations

import sys

from dotocr.cli.arguments import build_parser

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    _utf8_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "ocr":
            from dotocr.cli.ocr_command import run_ocr

            return run_ocr(args, parser)
        if args.command == "doctor":
            from dotocr.cli.doctor import run_doctor

            return run_doctor(args, parser)
        if args.command == "convert-gguf":
            from dotocr.cli.convert_command import run_convert

            return run_convert(args)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED


def _utf8_streams() -> None:
    """OCR text is any script; a Windows pipe in cp1252 must not turn that into a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        if stream.isatty():
            reconfigure(errors="replace")
        else:
            reconfigure(encoding="utf-8", errors="replace")


def _silence_stdout() -> None:
    """After the reader of our stdout went away (`| head`), make the exit-time flush quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


__all__ = ["build_parser", "main"]
