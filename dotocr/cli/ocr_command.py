"""`dotocr ocr`: recognise a batch of images with one engine, loaded once.

Every image gets its own verdict: a bad file is named on stderr in one line and the batch goes on;
the exit status says whether anything failed. Only stdout carries results, so `--format json`
output can be piped straight into another program.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dotocr.cli.arguments import DEFAULT_REMOTE_CONCURRENCY
from dotocr.cli.engine_choice import choose_engine
from dotocr.cli.inputs import STDIN_NAME, InputImage, expand_inputs
from dotocr.cli.ordered import in_order
from dotocr.cli.outputs import FolderWriter, StdoutWriter, shown_name
from dotocr.cli.quiet import quiet_libraries
from dotocr.config import Settings, SettingsError, SettingsFile, settings_from_args

EXIT_OK, EXIT_FAILED = 0, 1


class Reporter:
    """stderr lines and the progress bar, kept from trampling each other. No bar (and no tqdm import, which
    costs a warm-server run ~0.05 s) for one image or a stderr that is not a terminal."""

    def __init__(self) -> None:
        self.show_bar = False
        self.bar: Any = None

    def set_total(self, total: int) -> None:
        """Start the bar once the work is known: one step per image, one per PDF page read (no tqdm import,
        which costs a warm-server run ~0.05 s, for one page or a stderr that is not a terminal)."""
        self.show_bar = total > 1 and _isatty(sys.stderr)
        if self.show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit="page", dynamic_ncols=True, leave=False)

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
    reporter = Reporter()
    try:
        return _run_batch(args, settings, prompt, expanded.images, expanded.problems, reporter)
    finally:
        reporter.close()


@dataclass(frozen=True)
class Job:
    """One model call: an image file, or one page of a PDF."""

    input: InputImage
    page: int | None = None
    last: bool = True

    def label(self) -> str:
        name = "<stdin>" if self.input.name == STDIN_NAME else self.input.name
        return name if self.page is None else f"{name} page {self.page}"


def plan_jobs(images: list[InputImage], pages: list[int] | None,
              report: Callable[[str], None]) -> tuple[list[Job], int]:
    """Every model call of the batch, in order, and how many inputs failed already (a PDF that cannot open)."""
    from dotocr.engine import DotOCRError, PdfDocument, is_pdf

    jobs: list[Job] = []
    failed = 0
    for image in images:
        if not is_pdf(image.source):
            jobs.append(Job(image))
            continue
        try:
            with PdfDocument(image.source, _display(image)) as document:
                present, missing = document.select(pages)
                count = document.page_count
        except DotOCRError as exc:
            report(str(exc))
            failed += 1
            continue
        if missing:
            report(f"{_display(image)} has {count} pages; page {', '.join(map(str, missing))} "
                   f"{'does' if len(missing) == 1 else 'do'} not exist.")
            failed += 1
        for index, number in enumerate(present):
            jobs.append(Job(image, number, last=index == len(present) - 1))
    return jobs, failed


class PageSource:
    """The open PDFs of a batch: each opened on its first page and closed after its last."""

    def __init__(self, dpi: float) -> None:
        self.dpi = dpi
        self._open: dict[int, Any] = {}
        self._lock = threading.Lock()

    def picture(self, job: Job) -> tuple[Any, float | None]:
        """The image a job reads and, for a page, the DPI it was rendered at."""
        from dotocr.engine import PdfDocument, load_image

        if job.page is None:
            return load_image(job.input.source), None
        with self._lock:
            document = self._open.get(id(job.input))
            if document is None:
                document = self._open[id(job.input)] = PdfDocument(job.input.source, _display(job.input))
        page = document.render(job.page, self.dpi)
        return page.image, page.dpi

    def done(self, job: Job) -> None:
        if job.last:
            with self._lock:
                document = self._open.pop(id(job.input), None)
            if document is not None:
                document.close()

    def close(self) -> None:
        with self._lock:
            documents, self._open = list(self._open.values()), {}
        for document in documents:
            document.close()


def _run_batch(args: argparse.Namespace, settings: Settings, prompt: str | None, images: list[InputImage],
               problems: list[str], reporter: Reporter) -> int:
    from dotocr.engine import DEFAULT_DPI, load_image
    from dotocr.errors import DotOCRError, ModelUnavailableError

    for problem in problems:
        reporter.error(problem)
    failed = len(problems)
    if not images:
        return EXIT_FAILED
    if args.pictures == "link" and args.out is None:
        reporter.error("--pictures link saves the pictures beside the Markdown; give --out DIR too.")
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
    ready = []
    for image in images:  # a result that would replace a file fails now, before any model loads
        try:
            writer.prepare(image)
        except OSError as exc:
            reporter.error(_about(Job(image), str(exc)))
            failed += 1
        else:
            ready.append(image)
    jobs, unreadable = plan_jobs(ready, args.pages, reporter.error)
    failed += unreadable
    total = len(jobs) + len(problems) + len(images) - len(ready) + unreadable
    reporter.set_total(len(jobs))
    if not jobs:
        if total > 1:
            reporter.error(f"{failed} of {total} inputs failed.")
        return EXIT_FAILED

    # A file that is not a readable image is refused before the model loads (seconds, or a download): the
    # images up to the first readable one are checked here, and that one is decoded once, not twice.
    preloaded: dict[int, Any] = {}
    while jobs and jobs[0].page is None and not preloaded:
        try:
            preloaded[id(jobs[0])] = load_image(jobs[0].input.source)
        except DotOCRError as exc:
            reporter.error(_about(jobs[0], str(exc)))
            failed += 1
            reporter.advance()
            jobs = jobs[1:]
    if not jobs:
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

    concurrency = args.concurrency or (DEFAULT_REMOTE_CONCURRENCY if settings.engine == "remote" else 1)
    if engine.settings.engine != "remote":
        concurrency = 1  # one local model reads one page at a time; more threads would only wait
    pages = PageSource(args.dpi or DEFAULT_DPI)
    markdown = _markdown_options(args, settings, writer)

    def work(job: Job) -> Any:
        try:
            early = preloaded.pop(id(job), None)
            picture, dpi = (early, None) if early is not None else pages.picture(job)
            result = engine.ocr(picture, prompt=prompt, output_format=settings.output_format, bbox=args.bbox,
                                max_new_tokens=settings.max_new_tokens, file=job.input.name)
            result.file, result.page, result.dpi = job.input.name, job.page, dpi
            if markdown is not None and result.cells:
                result.text = markdown(job, picture, result.cells)
            return result
        finally:
            pages.done(job)

    written_any: set[int] = set()
    try:
        for job, future in in_order(jobs, work, concurrency):
            try:
                result = future.result()
            except ModelUnavailableError as exc:
                reporter.error(str(exc))
                return EXIT_FAILED
            except DotOCRError as exc:
                reporter.error(_about(job, str(exc)))
                failed += 1
                reporter.advance()
                if job.last:
                    _finish(writer, job, reporter)
                continue
            except Exception as exc:  # a bug met on one odd file: name it, keep the traceback for -v, go on
                logging.getLogger("dotocr").debug("unexpected error on %s", job.label(), exc_info=exc)
                reporter.error(_about(job, f"could not be read: an internal error ({type(exc).__name__}); "
                                      "please report it with the file."))
                failed += 1
                reporter.advance()
                if job.last:
                    _finish(writer, job, reporter)
                continue
            try:
                writer.write(job.input, result.to_json_dict(), first_page=id(job.input) not in written_any)
                written_any.add(id(job.input))
                if job.last:
                    writer.finish(job.input)
            except BrokenPipeError:
                raise  # the reader went away (`| head`): stop quietly, see main()
            except FileExistsError as exc:  # appeared since prepare(): still never replaced
                reporter.error(_about(job, str(exc)))
                failed += 1
            except OSError as exc:
                reporter.error(_about(job, f"the result could not be written ({exc.strerror or exc})."))
                failed += 1
            reporter.advance()
    finally:
        pages.close()

    if failed and total > 1:
        unit = "pages and inputs" if any(job.page is not None for job in jobs) else "inputs"
        reporter.error(f"{failed} of {total} {unit} failed.")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def _finish(writer: StdoutWriter | FolderWriter, job: Job, reporter: Reporter) -> None:
    try:
        writer.finish(job.input)
    except OSError as exc:
        reporter.error(_about(job, f"the result could not be written ({exc.strerror or exc})."))


def _markdown_options(args: argparse.Namespace, settings: Settings,
                      writer: StdoutWriter | FolderWriter) -> Callable[[Job, Any, list[dict]], str] | None:
    """How to re-render a page's Markdown when --pictures or --no-page-furniture ask for more than the default."""
    if settings.output_format != "markdown" or (args.pictures == "drop" and not args.no_page_furniture):
        return None
    from dotocr.engine import cells_to_markdown, picture_markdown

    def render(job: Job, picture: Any, cells: list[dict]) -> str:
        save = None
        if args.pictures == "link" and isinstance(writer, FolderWriter):
            target = writer.target_for(job.input)
            page = f"-p{job.page}" if job.page is not None else ""

            def save(crop: Any, number: int) -> str:
                name = f"{target.stem}{page}-picture{number}.png"
                crop.save(target.with_name(name), format="PNG")
                return name

        return cells_to_markdown(cells, furniture=not args.no_page_furniture,
                                 picture=picture_markdown(picture, args.pictures, save))

    return render


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


def _display(image: InputImage) -> str:
    return "Standard input" if image.name == STDIN_NAME else f'"{shown_name(image.name)}"'


def _about(job: Job, message: str) -> str:
    """`name: message` (or `name page N: message`), unless the message already names the file (and page);
    the name escaped either way."""
    image = job.input
    names_page = job.page is None or f"Page {job.page} " in message or f"page {job.page}" in message
    if image.name != STDIN_NAME and image.name in message and names_page:
        return message.replace(image.name, shown_name(image.name))
    return f"{shown_name(job.label())}: {message}"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
