"""Parsing the layout prompt's answer, boxes back to input pixels, and Markdown output."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image

from dotocr.engine.answers.cells import map_cells_to_original, parse_cells
from dotocr.engine.answers.markdown import cells_to_markdown
from dotocr.engine.answers.tables import html_table_to_markdown
from dotocr.engine.inputs.preprocessing import ImagePreparer

pytestmark = pytest.mark.timeout(60)

CELLS = [
    {"bbox": [10, 12, 300, 40], "category": "Title", "text": "# Quarterly report"},
    {"bbox": [10, 50, 600, 120], "category": "Text", "text": "Revenue grew by 12 %."},
    {"bbox": [10, 130, 200, 330], "category": "Picture"},
    {"bbox": [10, 340, 400, 380], "category": "Formula", "text": "$$E = mc^2$$"},
    {"bbox": [10, 390, 600, 500], "category": "Table",
     "text": "<table><tr><th>Item</th><th>Cost</th></tr><tr><td>Tea</td><td>3</td></tr></table>"},
    {"bbox": [10, 510, 600, 530], "category": "Page-footer", "text": "Page 1"},
]
RAW = json.dumps(CELLS, ensure_ascii=False)


def test_complete_json_parses_whole():
    cells, complete = parse_cells(RAW)
    assert complete and cells == CELLS


def test_fenced_and_wrapped_answers_parse():
    assert parse_cells(f"```json\n{RAW}\n```") == (CELLS, True)
    assert parse_cells(json.dumps({"layout": CELLS})) == (CELLS, True)
    assert parse_cells(json.dumps(CELLS[1])) == ([CELLS[1]], True)


def test_truncated_answer_keeps_every_finished_cell():
    cut = RAW[: RAW.index('"Page-footer"') + 5]  # generation stopped inside the last cell
    cells, complete = parse_cells(cut)
    assert not complete
    assert cells == CELLS[:-1]


def test_broken_cell_in_the_middle_is_skipped_not_fatal():
    broken = RAW.replace('"Revenue grew by 12 %."', '"Revenue "grew" by 12 %."')  # unescaped quotes
    cells, complete = parse_cells(broken)
    assert not complete
    assert [cell["category"] for cell in cells] == ["Title", "Picture", "Formula", "Table", "Page-footer"]


def test_unescaped_latex_backslashes_are_repaired():
    raw = '[{"bbox": [1, 2, 3, 4], "category": "Formula", "text": "\\alpha + \\sum_i x_i"}]'
    cells, complete = parse_cells(raw)
    assert complete and cells[0]["text"] == "\\alpha + \\sum_i x_i"
    truncated = raw[:-1] + ', {"bbox": [5, 6'
    cells, complete = parse_cells(truncated)
    assert not complete and cells[0]["text"] == "\\alpha + \\sum_i x_i"


def test_latex_braces_in_a_truncated_cell_are_not_taken_for_cells():
    raw = RAW[:-1] + ', {"bbox": [1, 2, 3, 4], "category": "Formula", "text": "\\\\frac{a}{b} + {\\"x\\": 1}'
    cells, complete = parse_cells(raw)
    assert not complete and cells == CELLS


def test_non_json_and_empty_answers_give_no_cells():
    assert parse_cells("Just some text the model wrote.") == ([], False)
    assert parse_cells("") == ([], False)
    assert parse_cells("[]") == ([], True)
    assert parse_cells('["a", 3]') == ([], True)


def test_salvage_is_fast_on_a_long_broken_answer():
    raw = json.dumps(CELLS * 150)[:-40] + "\\frac{" * 2000
    started = time.perf_counter()
    cells, complete = parse_cells(raw)
    assert time.perf_counter() - started < 1.0
    assert not complete and len(cells) == len(CELLS) * 150 - 1


def test_boxes_map_to_input_pixels():
    preparer = ImagePreparer()
    prepared = preparer.prepare(Image.new("RGB", (2000, 1000), "white"), 1024)
    sx, sy = prepared.scale
    assert prepared.image.size == (1008, 504)
    cells = [
        {"bbox": [100, 50, 504, 252], "category": "Text", "text": "a"},
        {"bbox": [1000.7, 10, 2000, 2000], "category": "Text", "text": "clamped"},
        {"bbox": [60, 40, 20, 10], "category": "Text", "text": "swapped"},
        {"bbox": "nonsense", "category": "Text", "text": "no box"},
        {"category": "Text", "text": "no box at all"},
    ]
    mapped = map_cells_to_original(cells, prepared)
    assert mapped[0]["bbox"] == [round(100 / sx), round(50 / sy), 1000, 500]
    assert mapped[1]["bbox"] == [round(1000.7 / sx), round(10 / sy), 2000, 1000]
    assert mapped[2]["bbox"] == [round(20 / sx), round(10 / sy), round(60 / sx), round(40 / sy)]
    assert "bbox" not in mapped[3] and "bbox" not in mapped[4]
    assert all(isinstance(v, int) for v in mapped[0]["bbox"])
    assert cells[0]["bbox"] == [100, 50, 504, 252]  # the input cells are left alone
    assert [cell["text"] for cell in mapped] == [cell["text"] for cell in cells]


def test_boxes_map_back_per_axis_when_the_sides_round_differently():
    """A 1000 x 1013 image is 1008 x 1008 for the model: x and y scale differently, and both are undone."""
    prepared = ImagePreparer().prepare(Image.new("RGB", (1000, 1013), "white"), None)
    assert prepared.image.size == (1008, 1008)
    mapped = map_cells_to_original([{"bbox": [504, 504, 1008, 1008], "category": "Text", "text": "x"}], prepared)
    assert mapped[0]["bbox"] == [500, 506, 1000, 1013]


def test_markdown_in_reading_order():
    markdown = cells_to_markdown(CELLS)
    assert markdown == (
        "# Quarterly report\n\n"
        "Revenue grew by 12 %.\n\n"
        "$$\nE = mc^2\n$$\n\n"
        "| Item | Cost |\n| --- | --- |\n| Tea | 3 |\n\n"
        "Page 1"
    )


@pytest.mark.parametrize("latex", ["x^2", "$$x^2$$", "\\[x^2\\]", "  $$ x^2 $$ ", "$x^2$", "\\(x^2\\)"])
def test_formula_delimiters_are_normalised(latex):
    assert cells_to_markdown([{"category": "Formula", "text": latex}]) == "$$\nx^2\n$$"


def test_pictures_and_empty_cells_are_omitted():
    cells = [{"category": "Picture", "text": "ignored caption-ish text"}, {"category": "Text", "text": "  "},
             {"category": "Text"}, {"category": "Caption", "text": "Figure 1"}]
    assert cells_to_markdown(cells) == "Figure 1"


def test_html_table_to_markdown():
    html = ("<table><thead><tr><th>Name</th><th>Note</th></tr></thead><tbody>"
            "<tr><td>A &amp; B</td><td>one<br>two</td></tr><tr><td>x | y</td><td><b>bold</b></td></tr>"
            "<tr><td>short row</td></tr></tbody></table>")
    assert html_table_to_markdown(html) == (
        "| Name | Note |\n| --- | --- |\n| A & B | one two |\n| x \\| y | bold |\n| short row |  |")


@pytest.mark.parametrize("html", [
    "<table><tr><td rowspan='2'>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
    "<table><tr><td colspan=\"2\">a</td></tr><tr><td>b</td><td>c</td></tr></table>",
    "<table><tr><td><table><tr><td>nested</td></tr></table></td></tr></table>",
    "Totals below: <table><tr><td>1</td></tr></table>",
    "no table at all",
])
def test_tables_markdown_cannot_hold_stay_html(html):
    assert html_table_to_markdown(html) is None
    assert cells_to_markdown([{"category": "Table", "text": html}]) == html.strip()


def test_span_of_one_is_still_plain():
    html = "<table><tr><td colspan='1'>a</td><td rowspan=\"1\">b</td></tr></table>"
    assert html_table_to_markdown(html) == "| a | b |\n| --- | --- |"


@pytest.mark.parametrize("text", ["$a$ and $b$", "where $x$ is \\(y\\)", "$$a$$ then $$b$$"])
def test_formula_text_with_several_formulas_is_not_wrapped_again(text):
    assert cells_to_markdown([{"category": "Formula", "text": text}]) == text


def test_page_headers_and_footers_can_be_left_out():
    cells = [{"category": "Page-header", "text": "Annual report 2024"}, *CELLS]
    full = cells_to_markdown(cells)
    assert full.startswith("Annual report 2024\n\n") and full.endswith("Page 1")
    without = cells_to_markdown(cells, furniture=False)
    assert "Annual report" not in without and "Page 1" not in without
    assert without == cells_to_markdown([c for c in CELLS if c["category"] != "Page-footer"])


def picture_page() -> Image.Image:
    from PIL import ImageDraw

    page = Image.new("RGB", (600, 400), "white")
    ImageDraw.Draw(page).rectangle((100, 50, 299, 149), fill=(200, 30, 30))
    return page


def test_pictures_can_be_embedded_as_png_data_urls():
    import base64
    import io
    import re

    from dotocr.engine.answers.markdown import picture_markdown

    cells = [{"category": "Text", "text": "Before"}, {"bbox": [100, 50, 300, 150], "category": "Picture"},
             {"bbox": [0, 0, 0, 0], "category": "Picture"}, {"category": "Text", "text": "After"}]
    markdown = cells_to_markdown(cells, picture=picture_markdown(picture_page(), "embed"))
    match = re.fullmatch(r"Before\n\n!\[Picture 1\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)\n\nAfter", markdown)
    assert match, markdown[:200]
    crop = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert crop.size == (200, 100) and crop.convert("RGB").getpixel((100, 50)) == (200, 30, 30)
    assert picture_markdown(picture_page(), "drop") is None
    assert cells_to_markdown(cells) == "Before\n\nAfter"  # dropped by default, as before


def test_pictures_can_be_linked_as_files(tmp_path):
    from dotocr.engine.answers.markdown import picture_markdown

    def save(crop: Image.Image, number: int) -> str:
        name = f"page-fig{number}.png"
        crop.save(tmp_path / name)
        return name

    cells = [{"bbox": [100, 50, 300, 150], "category": "Picture"}, {"bbox": [0, 0, 50, 50], "category": "Picture"}]
    markdown = cells_to_markdown(cells, picture=picture_markdown(picture_page(), "link", save))
    assert markdown == "![Picture 1](page-fig1.png)\n\n![Picture 2](page-fig2.png)"
    assert Image.open(tmp_path / "page-fig1.png").size == (200, 100)


# -- any model text: a result, in linear time (issue 18) ------------------------------------------------------

HOSTILE = {
    "3000 nested objects": '{"text": ' * 3000,
    "3000 nested, closed": "[" + '{"text": ' * 3000 + '"x"' + "}" * 3000 + "]",
    "200 KB of open objects": '{"text": {' * 20000,
    "120 KB of nested closed objects": '{"text": {' * 10000 + "}" * 20000,
    "a 5000-digit integer": '[{"bbox": [1' + "0" * 5000 + ', 2, 3, 4], "category": "Text", "text": "a"}]',
    "a fence and 200 KB of spaces": "```" + " " * 200_000 + "x",
    "200 KB of braces": "{" * 200_000,
    "200 KB of quotes": '"' * 200_000,
    "20000 unclosed strings": '{"text": "' * 20000,
    "200 KB of backslashes": '[{"text": "' + "\\" * 200_000 + '"}]',
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("prompt", ["layout", "layout-json"])
def test_any_model_text_gives_cells_or_the_text_in_linear_time(raw: str, prompt: str):
    """3000 nested objects once raised RecursionError, 200 KB of `{"text": {` took 108 s to salvage, and a fenced
    answer with a long run of spaces backtracked for minutes."""
    from dotocr.engine.answers.formatting import format_answer

    prepared = ImagePreparer().prepare(Image.new("RGB", (200, 100), "white"), 1024, patches=False)
    started = time.perf_counter()
    text, cells = format_answer(prompt, raw, prepared, Image.new("RGB", (200, 100), "white"))
    assert time.perf_counter() - started < 2.0
    assert isinstance(text, str) and isinstance(cells, list)
    json.dumps({"text": text, "cells": cells}, ensure_ascii=False).encode("utf-8")  # what the server sends


def test_numbers_too_big_for_a_float_lose_the_box_not_the_cell():
    """A 400-digit bbox number once raised OverflowError ("internal error" in the CLI)."""
    raw = '[{"bbox": [1' + "0" * 400 + ', 2, 3, 4], "category": "Text", "text": "kept"}]'
    prepared = ImagePreparer().prepare(Image.new("RGB", (200, 100), "white"), 1024, patches=False)
    cells = map_cells_to_original(parse_cells(raw)[0], prepared)
    assert cells == [{"category": "Text", "text": "kept"}]


def test_a_lone_surrogate_in_a_cell_becomes_a_replacement_character():
    """`\\ud800` in a cell's text made dotocr-serve answer 500: no UTF-8 body can carry it."""
    for raw in ('[{"bbox": [1, 2, 3, 4], "category": "Text", "text": "a\\ud800b\\udfffc"}]',
                '[{"bbox": [1, 2, 3, 4], "category": "Text", "text": "a\\ud800b"}, {"bbox": [1, 2, 3, 4], "t'):
        cells, _complete = parse_cells(raw)
        assert cells[0]["text"] in ("a\ufffdb\ufffdc", "a\ufffdb")
        json.dumps(cells, ensure_ascii=False).encode("utf-8")
    pair = '[{"text": "\\ud83d\\ude00"}]'  # an escaped pair is one character, kept
    assert parse_cells(pair)[0][0]["text"] == "\U0001F600"


def test_a_cell_keeps_only_its_own_keys():
    cells, complete = parse_cells('[{"bbox": [1, 2, 3, 4], "category": {"deep": [1]}, "text": "t", "extra": 1}]')
    assert complete and cells == [{"bbox": [1, 2, 3, 4], "text": "t"}]
