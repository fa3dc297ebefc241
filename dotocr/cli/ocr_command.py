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
from dataclasses import dataclass, replace
from typing import Any

from dotocr.cli.arguments import DEFAULT_REMOTE_CONCURRENCY
from dotocr.cli.engine_choice import choose_engine
from dotocr.cli.inputs import STDIN_NAME, InputImage, expand_inputs
from dotocr.cli.ordered import in_order
from dotocr.cli.outputs import FolderWriter, OutputExistsError, StdoutWriter, shown_name
from dotocr.cli.quiet import quiet_libraries
from dotocr.config import Settings, SettingsError, SettingsFile, settings_from_args
from dotocr.engine import (
    DEFAULT_DPI,
    DotOCRError,
    Engine,
    MarkdownStyle,
    OCRResult,
    PdfDocument,
    describe_pages,
    is_pdf,
    load_image,
    resolve_prompt,
)
from dotocr.errors import ModelUnavailableError
from dotocr.storage import check_writable

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
    prompt = _prompt(args, settings, parser)
    _show_engine_choice(args.verbose)
    expanded = expand_inputs(args.paths)
    reporter = Reporter()
    try:
        return Batch(args, settings, prompt, reporter).run(expanded.images, expanded.problems)
    finally:
        reporter.close()


def _show_engine_choice(verbose: bool) -> None:
    """-v: the engine's log on stderr; otherwise still its one line saying which device and precision it chose,
    and why."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="dotocr: %(message)s", stream=sys.stderr)
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("dotocr: %(message)s"))
    handler.addFilter(lambda record: record.getMessage().startswith("Loading "))
    handler.set_name("dotocr-choice")
    engine_log = logging.getLogger("dotocr.engine")
    if not any(h.get_name() == "dotocr-choice" for h in engine_log.handlers):
        engine_log.addHandler(handler)
    engine_log.setLevel(logging.INFO)


@dataclass(frozen=True)
class Job:
    """One model call: an image file, or one page of a PDF."""

    input: InputImage
    page: int | None = None
    last: bool = True
    picture: Any = None
    """The image, when it was decoded before the model loaded (the first readable file)."""

    def label(self) -> str:
        name = "<stdin>" if self.input.name == STDIN_NAME else self.input.name
        return name if self.page is None else f"{name} page {self.page}"


def plan_jobs(images: list[InputImage], pages: list[int] | None,
              report: Callable[[str], None]) -> tuple[list[Job], int]:
    """Every model call of the batch, in order, and how many inputs failed already (a PDF that cannot open)."""
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
            report(f"{_display(image)} has {count} pages; page {describe_pages(missing)} "
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


class Batch:
    """One `dotocr ocr` run: outputs checked, jobs planned, unreadable files refused before the model loads, then
    every job read in order. Every failure goes through `fail`, which names the input on stderr and counts it;
    the run goes on to the next input."""

    def __init__(self, args: argparse.Namespace, settings: Settings, prompt: str, reporter: Reporter) -> None:
        self.args, self.settings, self.prompt, self.reporter = args, settings, prompt, reporter
        self.failed = 0
        self.done = 0
        self.total = 0
        """Inputs and PDF pages: what the closing "N of M failed" counts."""
        self.writer: StdoutWriter | FolderWriter | None = None

    def run(self, images: list[InputImage], problems: list[str]) -> int:
        self.total = len(problems)
        for problem in problems:
            self.fail(problem)
        if not images:
            return EXIT_FAILED
        if self.args.pictures == "link" and self.args.out is None:
            self.reporter.error("--pictures link saves the pictures beside the Markdown; give --out DIR too.")
            return EXIT_FAILED
        self.writer = self._writer(images)
        if self.writer is None:
            return EXIT_FAILED
        jobs = self._first_readable(self._plan(images))
        if not jobs:
            return self.finish(jobs)
        engine = self._engine()
        if engine is None or not self._read(engine, jobs):
            return EXIT_FAILED
        return self.finish(jobs)

    def fail(self, message: str, job: Job | None = None) -> None:
        """One failed input or page, named on stderr (unless the message names it already) and counted."""
        self.reporter.error(message if job is None else _about(job, message))
        self.failed += 1

    def finish(self, jobs: list[Job]) -> int:
        if self.failed and self.total > 1:
            unit = "pages and inputs" if any(job.page is not None for job in jobs) else "inputs"
            self.reporter.error(f"{self.failed} of {self.total} {unit} failed.")
        return EXIT_OK if self.failed == 0 and jobs else EXIT_FAILED

    # -- before the model loads ---------------------------------------------------------------------------

    def _writer(self, images: list[InputImage]) -> StdoutWriter | FolderWriter | None:
        out = self.args.out
        if out is None:
            return StdoutWriter(self.settings.output_format, batch=len(images) > 1,
                                write_line=self.reporter.stdout_line)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.reporter.error(f"the output folder {out} could not be created ({exc.strerror or exc}).")
            return None
        try:
            check_writable(out)  # now, not after every page has been read
        except OSError as exc:
            self.reporter.error(f"the output folder {out} cannot be written to ({exc.strerror or exc}); choose "
                                "another --out folder.")
            return None
        return FolderWriter(out, self.settings.output_format, images, overwrite=self.args.overwrite)

    def _plan(self, images: list[InputImage]) -> list[Job]:
        """One job per image or PDF page; a result that would replace a file fails now, before any model loads."""
        assert self.writer is not None
        ready = []
        for image in images:
            try:
                self.writer.prepare(image)
            except OSError as exc:
                self.fail(str(exc), Job(image))
            else:
                ready.append(image)
        jobs, unreadable = plan_jobs(ready, self.args.pages, self.reporter.error)
        self.failed += unreadable
        self.total += len(images) - len(ready) + unreadable + len(jobs)
        self.reporter.set_total(len(jobs))
        return jobs

    def _first_readable(self, jobs: list[Job]) -> list[Job]:
        """The jobs from the first readable image on: the files before it are refused before the model loads
        (seconds, or a download). That image is decoded here once; the engine takes it as it is."""
        while jobs and jobs[0].page is None:
            try:
                return [replace(jobs[0], picture=load_image(jobs[0].input.source)), *jobs[1:]]
            except DotOCRError as exc:
                self.fail(str(exc), jobs[0])
                self.reporter.advance()
                jobs = jobs[1:]
        return jobs

    def _engine(self) -> Engine | None:
        if not self.args.verbose:
            quiet_libraries(keep_download_bars=_isatty(sys.stderr))
        try:
            engine = choose_engine(self.settings, local=self.args.local, notice=self.reporter.error)
            self.reporter.status("loading the model")
            engine.load()
        except DotOCRError as exc:
            self.reporter.error(str(exc))
            return None
        self.reporter.status("")
        return engine

    # -- reading --------------------------------------------------------------------------------------------

    def _read(self, engine: Engine, jobs: list[Job]) -> bool:
        """Every job, results written in input order; False when the model itself turned out to be missing."""
        concurrency = 1  # one local model reads one page at a time; more threads would only wait
        if engine.settings.engine == "remote":
            concurrency = self.args.concurrency or DEFAULT_REMOTE_CONCURRENCY
        pages = PageSource(self.args.dpi or DEFAULT_DPI)
        written: set[int] = set()
        try:
            for job, future in in_order(jobs, lambda job: self._ocr(engine, pages, job), concurrency):
                try:
                    result = future.result()
                except ModelUnavailableError as exc:  # no later input can work either
                    self.reporter.error(str(exc))
                    return False
                except DotOCRError as exc:
                    self.fail(str(exc), job)
                except OutputExistsError as exc:  # a linked picture's file (--pictures link)
                    self.fail(str(exc), job)
                except OSError as exc:
                    self.fail(f"a picture could not be written ({exc.strerror or exc}).", job)
                except Exception as exc:  # a bug met on one odd file: name it, keep the traceback for -v, go on
                    logging.getLogger("dotocr").debug("unexpected error on %s", job.label(), exc_info=exc)
                    self.fail(f"could not be read: an internal error ({type(exc).__name__}); please report it "
                              "with the file.", job)
                else:
                    self._write(job, result, first_page=id(job.input) not in written)
                    written.add(id(job.input))
                    self.done += 1
                    self.reporter.advance()
                    continue
                self.reporter.advance()
                if job.last:
                    self._finish_input(job)
        except KeyboardInterrupt:
            self._keep_what_was_read()
            raise
        finally:
            pages.close()
        return True

    def _keep_what_was_read(self) -> None:
        """Ctrl-C: the pages of a PDF read so far are written to its file (not thrown away), and stderr says so."""
        assert self.writer is not None
        try:
            partial = self.writer.finish_pending()
        except OSError as exc:
            self.reporter.error(f"interrupted; the pages read so far could not be written ({exc.strerror or exc}).")
            return
        where = "above" if self.args.out is None else f"in {shown_name(str(self.args.out))}"
        self.reporter.error(f"interrupted after {self.done} of {self.total} pages and inputs; the results read so "
                            f"far are {where}.")
        for path, numbers in partial:
            count = f"{len(numbers)} page{'s' if len(numbers) != 1 else ''}"
            self.reporter.error(f"{shown_name(str(path))} holds only the {count} of its PDF read before the "
                                f"interrupt (page {describe_pages(numbers)}).")

    def _ocr(self, engine: Engine, pages: PageSource, job: Job) -> OCRResult:
        try:
            picture, dpi = (job.picture, None) if job.picture is not None else pages.picture(job)
            result = engine.ocr(picture, prompt=self.prompt, output_format=self.settings.output_format,
                                bbox=self.args.bbox, max_new_tokens=self.settings.max_new_tokens,
                                file=job.input.name, markdown=self._markdown(job))
            result.page, result.dpi = job.page, dpi
            return result
        finally:
            pages.done(job)

    def _markdown(self, job: Job) -> MarkdownStyle:
        """--pictures and --no-page-furniture, for Markdown output; linked pictures are saved beside the result."""
        args = self.args
        if self.settings.output_format != "markdown":
            return MarkdownStyle()
        save = None
        if args.pictures == "link" and isinstance(self.writer, FolderWriter):
            writer = self.writer

            def save(crop: Any, number: int) -> str:
                return writer.save_picture(job.input, job.page, number, crop)

        return MarkdownStyle(furniture=not args.no_page_furniture, pictures=args.pictures, save_picture=save)

    def _write(self, job: Job, result: OCRResult, *, first_page: bool) -> None:
        assert self.writer is not None
        try:
            self.writer.write(job.input, result.to_json_dict(), first_page=first_page)
            if job.last:
                self.writer.finish(job.input)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): stop quietly, see main()
        except FileExistsError as exc:  # appeared since prepare(): still never replaced
            self.fail(str(exc), job)
        except OSError as exc:
            self.fail(f"the result could not be written ({exc.strerror or exc}).", job)

    def _finish_input(self, job: Job) -> None:
        """A PDF whose last page failed: the pages that were read are still written."""
        assert self.writer is not None
        try:
            self.writer.finish(job.input)
        except OSError as exc:
            self.reporter.error(_about(job, f"the result could not be written ({exc.strerror or exc})."))


def _settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    """The file, the environment and the flags; a bad flag is a usage error, a bad file or variable a warning."""
    settings_file = SettingsFile()
    base = settings_file.load()
    try:
        settings = settings_from_args(args, base, settings_file.problems)
    except SettingsError as exc:
        parser.error(str(exc))
    for problem in settings_file.problems:
        print(f"dotocr: warning: {problem}", file=sys.stderr)
    return settings


def _prompt(args: argparse.Namespace, settings: Settings, parser: argparse.ArgumentParser) -> str:
    """The prompt mode, by the engine's one rule (`resolve_prompt`); a contradiction (a box without the grounding
    prompt, grounding without a box) is a usage error before any model loads."""
    try:
        return resolve_prompt(args.prompt, output_format=settings.output_format, bbox=args.bbox,
                              default=settings.prompt)
    except DotOCRError as exc:
        parser.error(str(exc))


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
