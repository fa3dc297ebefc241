"""Issue 17's table done-when, end to end: a scripted checkpoint answers a table and a formula, the tray's capture
flow reads it with the real engine and puts it on the real X11 clipboard (our owner, under Xvfb); xclip reads the
targets back, and LibreOffice (headless) turns the clipboard's HTML into CSV with the same cells."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.capture_helpers import pattern_image
from tests.test_tray_controller import make_controller
from tests.tiny_models import save_answer_checkpoint
from tests.tray_helpers import tiny_settings, xclip_read, xclip_write
from tests.xvfb import needs_xvfb, xvfb_fixture

SOFFICE = shutil.which("soffice")
pytestmark = [needs_xvfb, pytest.mark.x11, pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("xclip") is None, reason="xclip is not installed")]
needs_libreoffice = pytest.mark.skipif(SOFFICE is None and os.environ.get("CI") != "true",
                                       reason="LibreOffice is not installed (CI installs libreoffice-calc-nogui)")

xvfb = xvfb_fixture(640, 480)

PIECES = ["Stock on 3 May:\n", "<table><thead><tr><th>Item</th><th>Qty</th><th>Price</th></tr></thead><tbody>",
          "<tr><td>Äpfel, rot</td><td>3</td><td>1.25</td></tr>", "<tr><td>Pears</td><td>12</td><td>0.85</td></tr>",
          "</tbody></table>\n\n", "$$E = mc^2$$"]
# numbers a spreadsheet shows as written (it would show 1.20 as 1.2)
CELLS = [["Item", "Qty", "Price"], ["Äpfel, rot", "3", "1.25"], ["Pears", "12", "0.85"]]


@pytest.fixture(scope="module")
def answering(tmp_path_factory, dots_tiny: Path) -> Path:
    return save_answer_checkpoint(tmp_path_factory.mktemp("table-answer"), dots_tiny, PIECES)


def capture(xvfb, answering: Path, tmp_path: Path, **settings) -> None:
    controller = make_controller(tiny_settings(answering, max_new_tokens=16, **settings), tmp_path)
    controller.start()
    assert controller.wait_loaded(60), controller.status_text()
    assert controller.start_ocr(pattern_image(120, 80))
    assert controller.wait_idle(60)
    assert controller.services.notifier.titles()[-1].startswith("Copied")  # type: ignore[attr-defined]


def clipboard(target: str) -> str:
    done = subprocess.run(["xclip", "-selection", "clipboard", "-t", target, "-o"], capture_output=True,
                          timeout=10, check=True)
    return done.stdout.decode("utf-8")


def test_a_table_lands_as_html_and_tsv_and_libreoffice_reads_the_same_cells(xvfb, answering, tmp_path):
    xclip_write("before")
    capture(xvfb, answering, tmp_path)
    targets = clipboard("TARGETS").split()
    assert "text/html" in targets and "UTF8_STRING" in targets
    text = xclip_read()
    assert text == "Stock on 3 May:\n\n" + "\n".join("\t".join(row) for row in CELLS) + "\n\n$$E = mc^2$$"
    html = clipboard("text/html")
    assert "<table>" in html and "<th>Item</th>" in html and "<td>Äpfel, rot</td>" in html
    assert "<math" in html and "<msup>" in html  # the formula as MathML; LaTeX stays in the text
    rows = libreoffice_csv(html, tmp_path)
    start = rows.index(CELLS[0])
    assert rows[start:start + len(CELLS)] == CELLS


def test_the_table_text_setting_makes_the_plain_text_markdown(xvfb, answering, tmp_path):
    capture(xvfb, answering, tmp_path, table_text="markdown")
    assert "| Item | Qty | Price |\n| --- | --- | --- |\n| Äpfel, rot | 3 | 1.25 |" in xclip_read()
    assert "<table>" in clipboard("text/html")


def libreoffice_csv(html: str, tmp_path: Path) -> list[list[str]]:
    """The HTML as LibreOffice Calc imports it (its HTML filter), saved as UTF-8 CSV, read back as rows."""
    if SOFFICE is None:
        pytest.fail("LibreOffice is not installed; CI installs libreoffice-calc-nogui")
    source = tmp_path / "clipboard.html"
    source.write_text(html, encoding="utf-8")
    out = tmp_path / "csv"
    done = subprocess.run(
        [SOFFICE, f"-env:UserInstallation={(tmp_path / 'lo-profile').as_uri()}", "--headless",
         "--infilter=HTML (StarCalc)", "--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76",
         "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    with (out / "clipboard.csv").open(encoding="utf-8", newline="") as file:
        return [[cell for cell in row] for row in csv.reader(file)]
