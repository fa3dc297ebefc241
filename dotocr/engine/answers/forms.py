"""An answer in the forms a paste target wants: plain text, Markdown, and HTML with real tables and MathML.

dots.ocr's edge is tables and formulas; a clipboard that only carries text throws it away at the last step. So the
answer is read into blocks (text, tables, display formulas) and written three ways:

- plain text: tables as TSV (a spreadsheet pastes cells) or as Markdown tables (`table_text`), formulas as the
  LaTeX the model wrote, everything else as it is: a plain-text editor gets readable text;
- Markdown: tables as Markdown tables where Markdown can hold them (else HTML), formulas as `$$` display math;
- HTML: real `<table>`s (spans and header cells kept, the text escaped, nothing else of the model's markup passed
  through), formulas as MathML, paragraphs and headings; None when the answer holds no table and no formula, so
  prose pastes as plain text and takes the target's own formatting.

The answer's text carries everything: for the layout prompts it is the Markdown made from the cells, so the cells
are not needed here. Answers that must stay as they are (layout-json's JSON, dots.mocr's SVG) have one form.
"""

from __future__ import annotations

import html as html_lib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dotocr.config import TABLE_TEXTS

from .formatting import MARKDOWN_PROMPTS
from .tables import (
    Rows,
    grid,
    html_table,
    html_table_to_markdown,
    is_markdown_table_start,
    read_html_table,
    read_markdown_rows,
    tsv,
)

if TYPE_CHECKING:
    from ..results import OCRResult

log = logging.getLogger(__name__)

PAGE_SEPARATOR = "\n\n"
"""Between the answers of several pictures (a PDF's pages): a blank line, which every paste target keeps."""
VERBATIM_PROMPTS = ("layout-json", "svg")
"""Answers whose text is JSON or SVG: a table or formula inside them is data, not something to paste as one."""

_STRUCTURE = re.compile(r"(?P<table><table\b.*?</table\s*>)|\$\$(?P<dollars>.+?)\$\$|\\\[(?P<brackets>.+?)\\\]",
                        re.DOTALL | re.IGNORECASE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


@dataclass(frozen=True)
class AnswerForms:
    """One answer, written for each kind of paste target."""

    text: str
    """Plain text: tables as TSV or Markdown (as asked), formulas as LaTeX."""
    markdown: str
    """Markdown: tables as Markdown tables (HTML where Markdown cannot hold them), formulas as $$ display math."""
    html: str | None
    """An HTML fragment with real <table>s and MathML; None when the answer holds no table and no formula."""
    tables: int = 0
    formulas: int = 0

    @property
    def offered(self) -> tuple[str, ...]:
        """The forms worth a "Copy as ..." choice, in order: "text" always, "markdown" where it differs from the
        text, "html" where there is a table or a formula to carry."""
        names = ["text"]
        if self.markdown != self.text:
            names.append("markdown")
        if self.html is not None:
            names.append("html")
        return tuple(names)


@dataclass(frozen=True)
class _Block:
    kind: str
    """"text", "table" or "formula"."""
    source: str
    """As the answer wrote it."""
    rows: Rows | None = None
    latex: str = ""


def answer_forms(answer: OCRResult | Sequence[OCRResult] | str, *, prompt: str | None = None,
                 table_text: str = "auto") -> AnswerForms:
    """The forms of an answer: an `OCRResult`, several (a PDF's pages, joined by PAGE_SEPARATOR), or an answer's
    text with the prompt mode it was read with.

    `table_text` is the `table_text` setting: "tsv", "markdown", or "auto" (Markdown when the answer is Markdown,
    i.e. the layout and web prompts, else TSV).
    """
    if isinstance(answer, Sequence) and not isinstance(answer, str):
        return _joined([answer_forms(page, prompt=prompt, table_text=table_text) for page in answer])
    if isinstance(answer, str):
        text, mode = answer, prompt or "text"
    else:
        text, mode = answer.text, prompt or answer.prompt
    if table_text not in TABLE_TEXTS:
        raise ValueError(f"table_text must be one of {', '.join(TABLE_TEXTS)}, not {table_text!r}")
    if table_text == "auto":
        table_text = "markdown" if mode in MARKDOWN_PROMPTS else "tsv"
    blocks = [] if mode in VERBATIM_PROMPTS else _blocks(text)
    if not any(block.kind != "text" for block in blocks):
        return AnswerForms(text, text, None)
    return AnswerForms(
        text=_join(_plain(block, table_text) for block in blocks),
        markdown=_join(_markdown(block) for block in blocks),
        html="\n".join(_html(block) for block in blocks),
        tables=sum(block.kind == "table" for block in blocks),
        formulas=sum(block.kind == "formula" for block in blocks))


def _joined(pages: list[AnswerForms]) -> AnswerForms:
    """Several answers as one: each form joined by PAGE_SEPARATOR; HTML where any page has some (the others' text
    as paragraphs)."""
    structured = any(page.html is not None for page in pages)
    return AnswerForms(
        text=PAGE_SEPARATOR.join(page.text for page in pages),
        markdown=PAGE_SEPARATOR.join(page.markdown for page in pages),
        html="\n".join(page.html if page.html is not None else _paragraphs(page.text) for page in pages)
        if structured else None,
        tables=sum(page.tables for page in pages), formulas=sum(page.formulas for page in pages))


# -- reading ------------------------------------------------------------------------------------------------

def _blocks(text: str) -> list[_Block]:
    """Text, HTML tables, display formulas (on lines of their own) and Markdown pipe tables, in order."""
    blocks: list[_Block] = []
    position = 0
    for match in _STRUCTURE.finditer(text):
        if match.group("table") is None and not _on_own_lines(text, match.start(), match.end()):
            continue  # math inside a sentence stays part of its text
        blocks.extend(_text_blocks(text[position:match.start()]))
        source = match.group(0)
        if match.group("table") is not None:
            rows = read_html_table(source)
            blocks.append(_Block("table", source, rows) if rows else _Block("text", source))
        else:
            latex = (match.group("dollars") or match.group("brackets") or "").strip()
            blocks.append(_Block("formula", source, latex=latex) if latex else _Block("text", source))
        position = match.end()
    blocks.extend(_text_blocks(text[position:]))
    return blocks


def _on_own_lines(text: str, start: int, end: int) -> bool:
    """Nothing but blanks before `start` on its line and after `end` on its line."""
    before = text.rfind("\n", 0, start) + 1
    after = text.find("\n", end)
    return not text[before:start].strip() and not text[end:after if after >= 0 else len(text)].strip()


def _text_blocks(text: str) -> list[_Block]:
    """Plain text with any Markdown pipe tables in it taken out as tables."""
    lines = text.split("\n")
    blocks: list[_Block] = []
    plain: list[str] = []
    index = 0
    while index < len(lines):
        if is_markdown_table_start(lines, index):
            end = index + 2
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            blocks.extend(_text(plain))
            plain = []
            table_lines = lines[index:end]
            blocks.append(_Block("table", "\n".join(table_lines), read_markdown_rows(table_lines)))
            index = end
        else:
            plain.append(lines[index])
            index += 1
    blocks.extend(_text(plain))
    return blocks


def _text(lines: list[str]) -> list[_Block]:
    body = "\n".join(lines).strip("\n")
    return [_Block("text", body)] if body.strip() else []


# -- writing ------------------------------------------------------------------------------------------------

def _join(pieces) -> str:
    return "\n\n".join(piece for piece in pieces if piece)


def _plain(block: _Block, table_text: str) -> str:
    if block.kind == "table" and block.rows is not None:
        if table_text == "markdown":
            return _markdown(block)  # one Markdown table, so "Copy as Markdown" is offered only where it differs
        return tsv(grid(block.rows))
    return block.source.strip()


def _markdown(block: _Block) -> str:
    if block.kind == "table" and block.rows is not None:
        if block.source.lstrip().startswith("|"):
            return block.source.strip()
        return html_table_to_markdown(block.source) or block.source.strip()
    if block.kind == "formula":
        return f"$$\n{block.latex}\n$$"
    return block.source.strip()


def _html(block: _Block) -> str:
    if block.kind == "table" and block.rows is not None:
        return html_table(block.rows)
    if block.kind == "formula":
        return mathml(block.latex)
    return _paragraphs(block.source)


def mathml(latex: str) -> str:
    """A display formula as MathML (latex2mathml); LaTeX the converter cannot read stays LaTeX, in <pre>."""
    try:
        from latex2mathml.converter import convert

        return convert(latex, display="block")
    except Exception as exc:  # the converter raises many kinds for LaTeX it does not know
        log.info("A formula stays LaTeX in the HTML (%s)", exc)
        return f"<pre>{html_lib.escape(latex)}</pre>"


def _paragraphs(text: str) -> str:
    """Paragraphs (blank-line separated) as <p> with <br> line breaks, Markdown headings as <h1>-<h6>, **bold**."""
    parts = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in paragraph.split("\n") if line.strip()]
        heading = _HEADING.match(lines[0]) if len(lines) == 1 else None
        if heading:
            level = len(heading.group(1))
            parts.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif lines:
            parts.append("<p>" + "<br>\n".join(_inline(line) for line in lines) + "</p>")
    return "\n".join(parts)


def _inline(line: str) -> str:
    return _BOLD.sub(r"<b>\1</b>", html_lib.escape(line, quote=False))
