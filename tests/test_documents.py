"""PDFs everywhere a file goes in: real PDFs written by Pillow, rendered by the real PDFium, read by the
tiny checkpoint through `dotocr ocr` (in-process) and through a real `dotocr-serve` on loopback."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from pdf_bombs import build, content_bomb, slow_forms
from PIL import Image, ImageDraw
from server_helpers import RecordingEngine, png_bytes, running_server, tiny_settings

from dotocr.engine import DocumentError, PdfDocument, RenderLimits, RenderStopped, is_pdf, parse_page_ranges
from dotocr.engine.inputs.documents import MAX_PAGE_PIXELS, fitting_dpi
from tests.cli_helpers import TINY_FLAGS, in_process_cli

pytestmark = pytest.mark.timeout(240)

FLAGS = [*TINY_FLAGS, "--max-image-size", "448"]


def page_image(number: int, size: tuple[int, int] = (850, 1100)) -> Image.Image:
    """A letter page at 100 DPI with `number` black squares down its left side: the page can be told apart."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for n in range(number):
        draw.rectangle((50, 50 + n * 150, 149, 149 + n * 150), fill="black")
    draw.text((300, 60), f"Page {number}", fill="black")
    return image


def make_pdf(path: Path | None = None, pages: int = 3, size: tuple[int, int] = (850, 1100)) -> bytes:
    images = [page_image(n + 1, size) for n in range(pages)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=100)
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def squares(image: Image.Image, dpi: float) -> int:
    """How many black squares the rendered page shows on its left side."""
    scale = dpi / 100
    column = np.asarray(image.convert("L"))[:, round(100 * scale)]
    dark = column < 100
    return int(np.sum(dark[1:] & ~dark[:-1]) + dark[0])


def encrypted_pdf() -> bytes:
    """A PDF with a standard security handler whose user password is not empty (crafted byte by byte)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
               b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>"]
    identity = b" /Encrypt 4 0 R /ID [<" + b"ab" * 16 + b"> <" + b"ab" * 16 + b">]"
    return build(objects, trailer=identity, version=b"1.4")


def one_sentence(message: str, *words: str) -> None:
    assert "\n" not in message and message.endswith("."), message
    for word in words:
        assert word.lower() in message.lower(), message


# -- the documents module --------------------------------------------------------------------------------


def test_pages_render_at_200_dpi_in_order(tmp_path):
    path = tmp_path / "three.pdf"
    data = make_pdf(path)
    assert is_pdf(path) and is_pdf(data) and not is_pdf(png_bytes()) and not is_pdf(tmp_path / "missing.pdf")
    with PdfDocument(path, "three.pdf") as document:
        assert document.page_count == 3
        pages = list(document.pages([1, 2, 3]))
    assert [p.number for p in pages] == [1, 2, 3]
    assert all(p.dpi == 200 and p.image.size == (1700, 2200) and p.image.mode == "RGB" for p in pages)
    assert [squares(p.image, p.dpi) for p in pages] == [1, 2, 3]


def test_a_page_over_the_pixel_limit_is_rendered_at_a_lower_dpi():
    # A0 (841 x 1189 mm) at 200 dpi would be 62 megapixels
    width_pt, height_pt = 2384, 3370
    dpi = fitting_dpi(width_pt, height_pt, 200)
    assert dpi < 200
    assert (width_pt * dpi / 72) * (height_pt * dpi / 72) <= MAX_PAGE_PIXELS
    assert fitting_dpi(612, 792, 200) == 200  # letter: as asked
    big = make_pdf(pages=1, size=(4000, 5000))  # 40 x 50 inch at 100 dpi
    with PdfDocument(big) as document:
        page = document.render(1)
    assert page.dpi < 200 and page.image.width * page.image.height <= MAX_PAGE_PIXELS
    assert page.image.width == pytest.approx(40 * page.dpi, abs=2)


@pytest.mark.parametrize(("text", "pages"), [("1-3,7", [1, 2, 3, 7]), ("2", [2]), ("3,1", [3, 1]),
                                             (" 1 - 2 , 2 ", [1, 2]), ("5-5", [5])])
def test_page_ranges(text, pages):
    assert parse_page_ranges(text) == pages


@pytest.mark.parametrize("text", ["", "0", "3-1", "a", "1-b", "-2", "1-99999"])
def test_bad_page_ranges_are_refused(text):
    with pytest.raises(ValueError):
        parse_page_ranges(text)


@pytest.mark.parametrize(("data", "words"), [
    (encrypted_pdf(), ("encrypted", "password")),
    (b"%PDF-1.4\nthis is not really a pdf", ("damaged",)),
    (make_pdf()[:400], ("damaged",)),
])
def test_unreadable_pdfs_are_one_sentence(data, words):
    with pytest.raises(DocumentError) as caught:
        PdfDocument(data, '"scan.pdf"')
    one_sentence(str(caught.value), "scan.pdf", *words)


def test_too_many_pages_and_missing_pages():
    with PdfDocument(make_pdf(pages=3), "doc.pdf") as document:
        assert document.select([1, 3, 9]) == ([1, 3], [9])
        with pytest.raises(DocumentError) as caught:
            document.select(None, max_pages=2)
        one_sentence(str(caught.value), "3 pages", "1-2")
        with pytest.raises(DocumentError):
            document.render(4)


def test_page_ranges_are_parsed_in_linear_time_with_a_cap_on_the_total():
    """Issue 18: 40 ranges of 1999 pages (466 characters) took 31 s (a quadratic duplicate check), and nothing
    capped the total of 79,960 pages."""
    forty = ",".join(f"{n * 2000 + 1}-{n * 2000 + 1999}" for n in range(40))
    started = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        parse_page_ranges(forty)
    assert time.perf_counter() - started < 0.5
    assert "more than 2000 pages" in str(caught.value) and len(str(caught.value)) < 120
    assert parse_page_ranges("1-2000") == list(range(1, 2001))
    assert parse_page_ranges("5,1-3,2,5") == [5, 1, 2, 3]
    for text in ("1-2000,2001", "1-1500,2000-2600", "9" * 5000):
        with pytest.raises(ValueError) as caught:
            parse_page_ranges(text)
        assert len(str(caught.value)) < 120


def test_a_pdf_that_renders_for_minutes_is_given_up_at_its_deadline_and_its_other_pages_go_on():
    """Issue 18: nested forms held PDFium (and its one global lock) for minutes. The page now fails with a
    sentence at the deadline; the next page starts a fresh renderer."""
    with PdfDocument(slow_forms(then_plain=True), '"slow.pdf"', limits=RenderLimits(seconds=2)) as document:
        started = time.monotonic()
        with pytest.raises(DocumentError) as caught:
            document.render(1)
        assert time.monotonic() - started < 20  # the deadline and a kill; the render itself would take minutes
        one_sentence(str(caught.value), "Page 1", "slow.pdf", "longer than 2 s")
        page = document.render(2)
        assert page.image.size == (1700, 2200) and np.asarray(page.image.convert("L")).min() < 50  # it drew


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the PDF renderer's memory cap is "
                    "RLIMIT_AS (Windows fact: there is no address-space limit for a process; there the renderer's "
                    "deadline is its only bound)")
def test_a_flate_bomb_dies_of_the_renderers_memory_cap_not_ours():
    """An 80 KB page that inflates to a gigabyte of PDFium objects: its process dies at 768 MiB, we say so."""
    bomb = content_bomb()
    assert len(bomb) < 100_000
    with PdfDocument(bomb, '"bomb.pdf"') as document:
        started = time.monotonic()
        with pytest.raises(DocumentError) as caught:
            document.render(1)
    assert time.monotonic() - started < 30
    one_sentence(str(caught.value), "Page 1", "bomb.pdf", "768 MiB")


def test_a_caller_that_stops_wanting_the_page_stops_its_render():
    stop = threading.Event()
    with PdfDocument(slow_forms(), "slow.pdf") as document:  # the default deadline: a minute
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(RenderStopped):
            document.render(1, should_stop=stop.is_set)
        assert time.monotonic() - started < 10


def test_one_slow_pdf_holds_up_no_other():
    """PDFium's lock is per process, and every document has its own: a normal PDF renders while another is
    stuck."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def stuck() -> None:
        with PdfDocument(slow_forms(), "slow.pdf") as document:
            try:
                document.render(1, should_stop=stop.is_set)
            except RenderStopped as exc:
                failures.append(exc)

    worker = threading.Thread(target=stuck)
    worker.start()
    try:
        time.sleep(0.5)  # the slow page is being rendered now (or soon: the normal one must not care either way)
        with PdfDocument(make_pdf(pages=2), "normal.pdf") as document:
            assert squares(document.render(2).image, 200) == 2
        assert worker.is_alive()  # the slow one is still at it: the normal one did not wait for it
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive() and len(failures) == 1


def png_quoting_a_pdf() -> bytes:
    """A real PNG whose text chunk, in its first KiB, says %PDF-."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "%PDF-1.7 is how a PDF begins")
    buffer = io.BytesIO()
    page_image(1, (200, 80)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def test_a_pdf_is_known_by_its_structure_not_by_a_substring(tmp_path):
    """Issue 18: a PNG with %PDF- in its first KiB was refused as a damaged PDF."""
    quoting = png_quoting_a_pdf()
    assert b"%PDF-" in quoting[:1024]
    assert not is_pdf(quoting)
    (tmp_path / "quote.png").write_bytes(quoting)
    assert not is_pdf(tmp_path / "quote.png")
    assert is_pdf(make_pdf(pages=1)) and is_pdf(b"\r\n\x00junk before the header %PDF-1.4\n")
    assert not is_pdf(b"GIF89a %PDF-1.4") and not is_pdf(b"\x00\x00\x00\x1cftypavif %PDF-1.4")


# -- dotocr ocr ------------------------------------------------------------------------------------------


@pytest.fixture
def cli(capsys):
    """`dotocr ARGS` in this process, as tests/test_cli.py runs it."""
    with in_process_cli(capsys) as run:
        yield run


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_reads_a_three_page_pdf_in_order(cli, tmp_path):
    path = tmp_path / "paper.pdf"
    make_pdf(path)
    done = cli("ocr", str(path), "--format", "json", *FLAGS)
    assert done.returncode == 0, done.stderr
    results = json_lines(done.stdout)
    assert [(r["file"], r["page"], r["dpi"]) for r in results] == [(str(path), n, 200) for n in (1, 2, 3)]
    assert all((r["width"], r["height"]) == (1700, 2200) for r in results)  # page pixels at 200 dpi

    chosen = cli("ocr", str(path), "--pages", "3,1", "--dpi", "100", "--format", "json", *FLAGS)
    assert chosen.returncode == 0, chosen.stderr
    assert [(r["page"], r["dpi"], r["width"]) for r in json_lines(chosen.stdout)] == [(3, 100, 850), (1, 100, 850)]


def test_cli_pdf_markdown_joins_pages_and_out_keeps_one_file(cli, tmp_path):
    path = tmp_path / "paper.pdf"
    make_pdf(path)
    as_json = json_lines(cli("ocr", str(path), "--prompt", "layout", "--format", "json", *FLAGS).stdout)
    markdown = cli("ocr", str(path), "--format", "markdown", *FLAGS)
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout == "\n\n---\n\n".join(r["text"].rstrip("\n") for r in as_json) + "\n"

    out = tmp_path / "out"
    done = cli("ocr", str(path), str(tmp_path / "paper.pdf"), "--out", str(out), "--format", "json", *FLAGS)
    assert done.returncode == 0, done.stderr
    (written,) = out.iterdir()
    assert written.name == "paper.json"
    pages = json.loads(written.read_text(encoding="utf-8"))
    assert [p["page"] for p in pages] == [1, 2, 3]


def test_cli_names_a_bad_pdf_and_missing_pages_and_goes_on(cli, tmp_path):
    good = tmp_path / "good.pdf"
    make_pdf(good, pages=2)
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypted_pdf())
    done = cli("ocr", str(locked), str(good), "--pages", "2-3", "--format", "json", *FLAGS)
    assert done.returncode == 1
    assert [r["page"] for r in json_lines(done.stdout)] == [2]
    errors = [line for line in done.stderr.splitlines() if not line.startswith("dotocr: Loading")]
    assert any("locked.pdf" in line and "password" in line for line in errors), errors
    assert any("good.pdf" in line and "page 3 does not exist" in line for line in errors), errors
    assert "Traceback" not in done.stderr


# -- POST /ocr -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(dots_tiny: Path) -> RecordingEngine:
    return RecordingEngine(tiny_settings(dots_tiny))


@pytest.fixture(scope="module")
def url(engine: RecordingEngine):
    with running_server(engine) as base:
        yield base


def upload(url: str, data: bytes, name: str = "paper.pdf", **fields: str) -> httpx.Response:
    return httpx.post(f"{url}/ocr", files={"file": (name, data, "application/pdf")}, data=fields, timeout=120)


def test_pdf_upload_gives_a_result_per_page_in_order(url: str, engine: RecordingEngine):
    before = len(engine.calls)
    response = upload(url, make_pdf(pages=3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == "paper.pdf" and body["page_count"] == 3
    assert [(p["page"], p["dpi"], p["width"], p["height"]) for p in body["pages"]] == [
        (n, 200, 1700, 2200) for n in (1, 2, 3)]
    assert [call["image_size"] for call in engine.calls[before:]] == [(1700, 2200)] * 3
    some = upload(url, make_pdf(pages=3), pages="2-3", dpi="72").json()
    assert [(p["page"], p["dpi"], p["width"]) for p in some["pages"]] == [(2, 72, 612), (3, 72, 612)]


def test_a_png_quoting_a_pdf_is_read_as_the_image_it_is(url: str):
    answer = upload(url, png_quoting_a_pdf(), "quote.png")
    assert answer.status_code == 200, answer.text
    assert answer.json()["width"] == 200 and "pages" not in answer.json()


@pytest.mark.parametrize(("data", "fields", "words"), [
    (encrypted_pdf(), {}, ("password",)),
    (b"%PDF-1.7 broken", {}, ("damaged",)),
    (make_pdf(pages=2), {"pages": "5"}, ("2 pages", "page 5")),
    (make_pdf(pages=1), {"pages": "x"}, ("pages=",)),
    (make_pdf(pages=1), {"dpi": "5000"}, ("dpi=",)),
    (png_bytes(), {"pages": "1"}, ("PDF uploads only",)),
])
def test_bad_pdf_uploads_are_400_with_one_sentence(url: str, data: bytes, fields: dict, words: tuple):
    response = upload(url, data, **fields)
    assert response.status_code == 400, response.text
    one_sentence(response.json()["error"]["message"], *words)
