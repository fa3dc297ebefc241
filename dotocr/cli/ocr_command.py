"""`dotocr ocr`: recognise a batch of images with one engine, loaded once.

Every image gets its own verdict: a bad file is named on stderr in one line and the batch goes on;
the exit status says whether anything failed. Only stdout carries results, so `--format json`
output can be piped straight into another program.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from dotocr.cli.engine_choice import choose_engine
from dotocr.cli.inputs import STDIN_NAME, InputImage, expand_inputs
from dotocr.cli.outputs import FolderWriter, StdoutWriter, shown_name
from dotocr.cli.quiet import quiet_libraries
from dotocr.config import Settings, SettingsError, SettingsFile, settings_from_args

EXIT_OK, EXIT_FAILED = 0, 1


class Reporter:
    """stderr lines and the progress bar, kept from trampling each other. No bar (and no tqdm import, which
    costs a warm-server run ~0.05 s) for one image or a stderr that is not a terminal."""

    def __init__(self, total: int) -> None:
        self.show_bar = total > 1 and _isatty(sys.stderr)
        self.bar: Any = None
        if self.show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit="image", dynamic_ncols=True, leave=False)

    def error(self, message: str) -> None:
        self._write(f"dotocr: {message}", sys.stderr)

    def stdout_line(self, line: str) -> None:
        self._write(line, sys.stdout)
        sys.stdout.flush()

    def _write(self, line: str, stream: Any) -> None:
        if self.bar is not None:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream)

    def status(self, text: str) -> None:
        """A word on what the bar is waiting for (loading the model takes a while)."""
        if self.bar is not None:
            self.bar.set_description_str(text)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _CurrentStderr(logging.Handler):
    """Writes to whatever `sys.stderr` is when a line is logged (pipes and tests replace it), above the
    progress bar rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm = sys.modules.get("tqdm")  # a bar exists only if tqdm was imported for one
            if tqdm is not None:
                tqdm.tqdm.write(self.format(record), file=sys.stderr)
            else:
                print(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def run_ocr(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings = _settings(args, parser)
    prompt = request_prompt(args, settings)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="dotocr: %(message)s", stream=sys.stderr)
    else:  # still say which device and precision the engine chose, and why: one line on stderr
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("dotocr: %(message)s"))
        handler.addFilter(lambda record: record.getMessage().startswith("Loading "))
        handler.set_name("dotocr-choice")
        engine_log = logging.getLogger("dotocr.engine")
        if not any(h.get_name() == "dotocr-choice" for h in engine_log.handlers):
            engine_log.addHandler(handler)
        engine_log.setLevel(logging.INFO)

    expanded = expand_inputs(args.paths)
    reporter = Reporter(len(expanded.images))
    try:
        return _run_batch(args, settings, prompt, expanded.images, expanded.problems, reporter)
    finally:
        reporter.close()


def _run_batch(args: argparse.Namespace, settings: Settings, prompt: str | None, images: list[InputImage],
               problems: list[str], reporter: Reporter) -> int:
    from dotocr.engine import load_image
    from dotocr.errors import DotOCRError, ModelUnavailableError

    for problem in problems:
        reporter.error(problem)
    failed = len(problems)
    if not images:
        return EXIT_FAILED

    writer: StdoutWriter | FolderWriter
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reporter.error(f"the output folder {args.out} could not be created ({exc.strerror or exc}).")
            return EXIT_FAILED
        writer = FolderWriter(args.out, settings.output_format, images, overwrite=args.overwrite)
    else:
        writer = StdoutWriter(settings.output_format, batch=len(images) > 1, write_line=reporter.stdout_line)
    total = len(images) + len(problems)
    ready = []
    for image in images:  # a result that would replace a file fails now, before any model loads
        try:
            writer.prepare(image)
        except OSError as exc:
            reporter.error(_about(image, str(exc)))
            failed += 1
        else:
            ready.append(image)
    images = ready
    if not images:
        if total > 1:
            reporter.error(f"{failed} of {total} inputs failed.")
        return EXIT_FAILED

    total = len(images) + len(problems)
    # A file that is not a readable image is refused before the model loads (seconds, or a download): the
    # images up to the first readable one are checked here, and that one is decoded once, not twice.
    first: Any = None
    while images and first is None:
        try:
            first = load_image(images[0].source)
        except DotOCRError as exc:
            reporter.error(_about(images[0], str(exc)))
            failed += 1
            reporter.advance()
            images = images[1:]
    if not images:
        if total > 1:
            reporter.error(f"{failed} of {total} inputs failed.")
        return EXIT_FAILED

    if not args.verbose:
        quiet_libraries(keep_download_bars=_isatty(sys.stderr))
    try:
        engine = choose_engine(settings, local=args.local, notice=reporter.error)
        reporter.status("loading the model")
        engine.load()
    except DotOCRError as exc:
        reporter.error(str(exc))
        return EXIT_FAILED
    reporter.status("")

    for index, image in enumerate(images):
        try:
            result = engine.ocr(first if index == 0 else image.source, prompt=prompt,
                                output_format=settings.output_format, bbox=args.bbox,
                                max_new_tokens=settings.max_new_tokens, file=image.name)
        except ModelUnavailableError as exc:
            reporter.error(str(exc))
            return EXIT_FAILED
        except DotOCRError as exc:
            reporter.error(_about(image, str(exc)))
            failed += 1
            reporter.advance()
            continue
        except Exception as exc:  # a bug met on one odd file: name it, keep the traceback for -v, go on
            logging.getLogger("dotocr").debug("unexpected error on %s", image.name, exc_info=exc)
            reporter.error(_about(image, f"could not be read: an internal error ({type(exc).__name__}); "
                                  "please report it with the file."))
            failed += 1
            reporter.advance()
            continue
        result.file = image.name
        try:
            writer.write(image, result.to_json_dict())
        except BrokenPipeError:
            raise  # the reader went away (`| head`): stop quietly, see main()
        except FileExistsError as exc:  # appeared since prepare(): still never replaced
            reporter.error(_about(image, str(exc)))
            failed += 1
        except OSError as exc:
            reporter.error(_about(image, f"the result could not be written ({exc.strerror or exc})."))
            failed += 1
        reporter.advance()

    if failed and total > 1:
        reporter.error(f"{failed} of {total} inputs failed.")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    settings_file = SettingsFile()
    base = settings_file.load()
    for problem in settings_file.problems:
        print(f"dotocr: warning: {problem}", file=sys.stderr)
    prompt = args.prompt
    if args.bbox is not None:
        if prompt not in (None, "grounding"):
            parser.error(f"--bbox reads the text inside a box and needs --prompt grounding, not {prompt}")
        prompt = "grounding"
    try:
        settings = settings_from_args(args, base).replace(prompt=prompt, output_format=args.output_format)
    except SettingsError as exc:
        parser.error(str(exc))
    if settings.prompt == "grounding" and args.bbox is None:
        parser.error("--prompt grounding needs --bbox X1,Y1,X2,Y2 (the box to read, in image pixels)")
    return settings


def request_prompt(args: argparse.Namespace, settings: Settings) -> str | None:
    """The prompt mode to ask for. Markdown output with no prompt chosen (neither --prompt nor a
    non-default setting) asks for None, so the engine picks its layout prompt: headings, tables and
    formulas rather than flat text."""
    chosen = args.prompt is not None or args.bbox is not None or settings.prompt != "text"
    if settings.output_format == "markdown" and not chosen:
        return None
    return settings.prompt


def _about(image: InputImage, message: str) -> str:
    """`name: message`, unless the message already names the file; the name escaped either way."""
    if image.name != STDIN_NAME and image.name in message:
        return message.replace(image.name, shown_name(image.name))
    name = "<stdin>" if image.name == STDIN_NAME else shown_name(image.name)
    return f"{name}: {message}"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
