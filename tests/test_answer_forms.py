"""An answer's forms (plain text, Markdown, HTML) and the table reader behind them: pure functions, no model."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from dotocr.engine import AnswerForms, OCRResult, answer_forms
from dotocr.engine.answers.tables import TableCell, grid, read_html_table, tsv

TABLE = "<table><tr><th>Item</th><th>Qty</th></tr><tr><td>Apples</td><td>3</td></tr></table>"


def result(text: str, prompt: str = "text") -> OCRResult:
    return OCRResult(text=text, raw=text, prompt=prompt, stop_reason="eos", width=10, height=10, image_tokens=1,
                     prompt_tokens=2, generated_tokens=3, device="cpu", precision="fp32")


class Cells(HTMLParser):
    """Reads an HTML fragment back: the tables' rows of (tag, text, attributes), and every start tag seen."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str, dict]]]] = []
        self.tags: list[str] = []
        self._cell: list | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = [tag, "", dict(attrs)]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(tuple(self._cell))
            self._cell = None


def test_prose_has_one_form_and_no_html():
    forms = answer_forms(result("Invoice 4711\nTotal: 99.50 EUR"))
    assert forms == AnswerForms("Invoice 4711\nTotal: 99.50 EUR", "Invoice 4711\nTotal: 99.50 EUR", None)
    assert forms.offered == ("text",)


def test_a_table_is_tsv_in_the_text_markdown_in_markdown_and_a_real_table_in_html():
    forms = answer_forms(result("Stock:\n" + TABLE + "\n\n$$E = mc^2$$"))
    assert forms.text == "Stock:\n\nItem\tQty\nApples\t3\n\n$$E = mc^2$$"
    assert forms.markdown == "Stock:\n\n| Item | Qty |\n| --- | --- |\n| Apples | 3 |\n\n$$\nE = mc^2\n$$"
    read = Cells(forms.html)
    assert read.tables == [[[("th", "Item", {}), ("th", "Qty", {})], [("td", "Apples", {}), ("td", "3", {})]]]
    assert "math" in read.tags and "msup" in read.tags  # MathML, E = m c^2
    assert (forms.tables, forms.formulas) == (1, 1)
    assert forms.offered == ("text", "markdown", "html")


def test_table_text_markdown_keeps_markdown_tables_in_the_plain_text():
    forms = answer_forms(result(TABLE), table_text="markdown")
    assert forms.text == "| Item | Qty |\n| --- | --- |\n| Apples | 3 |"
    assert forms.offered == ("text", "html")  # the Markdown form is the same text


@pytest.mark.parametrize(("prompt", "expected"), [("text", "tsv"), ("layout", "markdown"), ("web", "markdown"),
                                                  ("grounding", "tsv")])
def test_auto_follows_the_answer_markdown_for_markdown_prompts_else_tsv(prompt, expected):
    text = answer_forms(result(TABLE, prompt)).text
    assert text == ("Item\tQty\nApples\t3" if expected == "tsv" else "| Item | Qty |\n| --- | --- |\n| Apples | 3 |")


def test_markdown_pipe_tables_in_the_text_are_tables_too():
    text = "Before\n| a | b |\n| :--- | ---: |\n| 1 \\| one | 2 |\n| 3 | 4 |\nafter"
    forms = answer_forms(text)
    assert forms.text == "Before\n\na\tb\n1 | one\t2\n3\t4\n\nafter"
    assert Cells(forms.html).tables == [[[("th", "a", {}), ("th", "b", {})], [("td", "1 | one", {}), ("td", "2", {})],
                                         [("td", "3", {}), ("td", "4", {})]]]


def test_spans_stay_in_html_and_line_up_in_tsv():
    html = ("<table><tr><th colspan='2'>Fruit</th><th>Qty</th></tr>"
            "<tr><td rowspan=2>Red</td><td>Apple</td><td>3</td></tr><tr><td>Cherry</td><td>9</td></tr></table>")
    forms = answer_forms(html)
    assert forms.text == "Fruit\t\tQty\nRed\tApple\t3\n\tCherry\t9"
    assert forms.markdown == html  # Markdown cannot hold spans: the table stays HTML there, as in our Markdown
    rows = Cells(forms.html).tables[0]
    assert rows[0][0] == ("th", "Fruit", {"colspan": "2"}) and rows[1][0] == ("td", "Red", {"rowspan": "2"})


def test_the_html_carries_text_escaped_and_nothing_else_of_the_models_markup():
    html = ('<table onclick="steal()"><tr><td style="x">&lt;script&gt;alert(1)&lt;/script&gt; &amp; '
            '<b>bold</b></td></tr></table><script>alert(2)</script>')
    forms = answer_forms(html)
    assert "onclick" not in forms.html and "style" not in forms.html and "<b>" not in forms.html
    assert "<script>" not in forms.html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; bold" in forms.html


def test_formulas_inside_a_sentence_stay_in_the_sentence():
    forms = answer_forms("The area is $$A = \\pi r^2$$ here.\n\n\\[\nx^2\n\\]")
    assert forms.text == "The area is $$A = \\pi r^2$$ here.\n\n\\[\nx^2\n\\]"
    assert forms.markdown == "The area is $$A = \\pi r^2$$ here.\n\n$$\nx^2\n$$"
    assert forms.formulas == 1 and forms.html.count("<math") == 1


def test_latex_the_converter_cannot_read_stays_latex_in_the_html():
    forms = answer_forms("$$\\frac{1}{$$")
    assert forms.formulas == 1 and "<pre>" in forms.html and "\\frac{1}{" in forms.html


def test_paragraphs_headings_and_bold_in_the_html():
    forms = answer_forms("# Title\n\nSome **bold** text\nnext line & more\n\n" + TABLE)
    assert forms.html.startswith("<h1>Title</h1>\n<p>Some <b>bold</b> text<br>\nnext line &amp; more</p>\n<table>")


@pytest.mark.parametrize("prompt", ["layout-json", "svg"])
def test_json_and_svg_answers_have_one_form(prompt):
    text = '[{"category": "Table", "text": "' + TABLE + '"}]' if prompt == "layout-json" else "<svg></svg>"
    forms = answer_forms(result(text, prompt))
    assert (forms.text, forms.markdown, forms.html) == (text, text, None)


def test_a_string_answer_and_a_bad_table_text():
    assert answer_forms(TABLE, prompt="layout").text.startswith("| Item |")
    with pytest.raises(ValueError, match="table_text"):
        answer_forms(TABLE, table_text="csv")


def test_read_html_table_refuses_what_is_not_one_table():
    assert read_html_table("<table><tr><td><table><tr><td>x</td></tr></table></td></tr></table>") is None
    assert read_html_table("prose <table><tr><td>x</td></tr></table>") is None
    assert read_html_table("no table") is None


def test_huge_spans_are_capped():
    rows = [[TableCell("a", colspan=100)], [TableCell("b")]]
    assert read_html_table("<table><tr><td colspan='99999999'>a</td></tr></table>")[0][0].colspan == 100
    texts = grid(rows)
    assert len(texts[0]) == 100 and texts[1][0] == "b"
    assert tsv([["a\tb", "c\nd"]]) == "a b\tc d"


def test_a_pdfs_pages_become_one_answer_joined_by_a_blank_line():
    forms = answer_forms([result("Page one, prose."), result(TABLE)])
    assert forms.text == "Page one, prose.\n\nItem\tQty\nApples\t3"
    assert forms.html == "<p>Page one, prose.</p>\n" + answer_forms(TABLE).html and forms.tables == 1
    assert answer_forms([result("a"), result("b")]) == AnswerForms("a\n\nb", "a\n\nb", None)


def test_a_markdown_answer_with_markdown_table_text_offers_no_second_markdown():
    """Layout answers are Markdown already: their plain text keeps the model's table, so the window offers only
    the real table beside "Copy", not a "Copy as Markdown" that differs in a separator's dashes."""
    forms = answer_forms("Sales\n\n| a | b |\n|---|---|\n| 1 | 2 |", prompt="layout", table_text="markdown")
    assert forms.text == forms.markdown == "Sales\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert forms.offered == ("text", "html")
