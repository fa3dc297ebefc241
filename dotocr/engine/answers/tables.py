"""Tables as dots.ocr writes them (HTML in a Table cell, sometimes a Markdown pipe table in plain text), read into
rows and written as a Markdown table, TSV or clean HTML.

One reader for each source; everything else works on its rows. Spans are kept in the rows (`TableCell.colspan`,
`rowspan`); `grid` lays them out the way a spreadsheet does: the text in the top-left slot, empty slots under and
beside it, so columns stay aligned in TSV and in a Markdown table.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from html.parser import HTMLParser

MAX_SPAN = 100
"""A rowspan or colspan larger than this is read as this: a model's typo must not make a million-cell grid."""


@dataclass(frozen=True)
class TableCell:
    text: str
    header: bool = False
    colspan: int = 1
    rowspan: int = 1


Rows = list[list[TableCell]]


def read_html_table(source: str) -> Rows | None:
    """The rows of the one table `source` holds; None when it holds no table, a nested one, or prose outside it."""
    reader = _TableReader()
    try:
        reader.feed(source)
        reader.close()
    except _NotOneTable:
        return None
    rows = [row for row in reader.rows if row]
    if not rows or reader.outside_text.strip():
        return None
    return rows


def html_table_to_markdown(source: str) -> str | None:
    """A Markdown table for a plain HTML table; None when Markdown cannot hold it (spans, nesting, prose)."""
    rows = read_html_table(source)
    if rows is None or any(cell.colspan > 1 or cell.rowspan > 1 for row in rows for cell in row):
        return None
    return markdown_table(grid(rows))


_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_PIPE = re.compile(r"(?<!\\)\|")


def is_markdown_table_start(lines: list[str], index: int) -> bool:
    """Line `index` opens a Markdown pipe table: a row of cells, then a separator line."""
    return (index + 1 < len(lines) and lines[index].lstrip().startswith("|")
            and _SEPARATOR.match(lines[index + 1]) is not None)


def read_markdown_rows(lines: list[str]) -> Rows:
    """The rows of a Markdown pipe table (header, separator, rows): the first row's cells are headers."""
    rows: Rows = []
    for number, line in enumerate(lines):
        if number == 1:
            continue  # the separator
        body = line.strip()
        body = body[1:] if body.startswith("|") else body
        body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
        rows.append([TableCell(part.strip().replace("\\|", "|"), header=number == 0) for part in _PIPE.split(body)])
    return rows


def grid(rows: Rows) -> list[list[str]]:
    """The rows as a rectangle of texts, spans laid out as a spreadsheet shows merged cells."""
    placed: dict[tuple[int, int], str] = {}
    for r, row in enumerate(rows):
        column = 0
        for cell in row:
            while (r, column) in placed:
                column += 1
            for dr in range(min(cell.rowspan, len(rows) - r)):
                for dc in range(cell.colspan):
                    placed[(r + dr, column + dc)] = cell.text if dr == dc == 0 else ""
            column += cell.colspan
    width = max((c for _r, c in placed), default=-1) + 1
    return [[placed.get((r, c), "") for c in range(width)] for r in range(len(rows))]


def markdown_table(texts: list[list[str]]) -> str:
    """A Markdown table, the first row as its header."""
    width = max(len(row) for row in texts)
    lines = [_markdown_row(texts[0], width), "| " + " | ".join(["---"] * width) + " |"]
    lines.extend(_markdown_row(row, width) for row in texts[1:])
    return "\n".join(lines)


def _markdown_row(cells: list[str], width: int) -> str:
    cells = cells + [""] * (width - len(cells))
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def tsv(texts: list[list[str]]) -> str:
    """Tab-separated rows, as spreadsheets paste them: a tab or line break inside a cell becomes a space."""
    return "\n".join("\t".join(" ".join(cell.split()) for cell in row) for row in texts)


def html_table(rows: Rows) -> str:
    """A clean HTML table: the cells' text escaped, spans and header cells kept, nothing else of the source."""
    lines = ["<table>"]
    for row in rows:
        cells = []
        for cell in row:
            tag = "th" if cell.header else "td"
            spans = "".join(f' {name}="{value}"' for name, value in (("colspan", cell.colspan),
                                                                    ("rowspan", cell.rowspan)) if value > 1)
            cells.append(f"<{tag}{spans}>{html_lib.escape(cell.text)}</{tag}>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


class _NotOneTable(Exception):
    """The source holds nested tables."""


class _TableReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: Rows = []
        self.outside_text = ""
        self._cell: list[str] | None = None
        self._cell_attrs: tuple[bool, int, int] = (False, 1, 1)
        self._tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._tables += 1
            if self._tables > 1:
                raise _NotOneTable
        elif tag == "tr":
            self._finish_cell()
            self.rows.append([])
        elif tag in ("td", "th"):
            self._finish_cell()
            if not self.rows:
                self.rows.append([])
            found = dict(attrs)
            self._cell = []
            self._cell_attrs = (tag == "th", _span(found.get("colspan")), _span(found.get("rowspan")))
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "tr"):
            self._finish_cell()
        elif tag == "table":
            self._finish_cell()
            self._tables -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        else:
            self.outside_text += data

    def _finish_cell(self) -> None:
        if self._cell is not None:
            header, colspan, rowspan = self._cell_attrs
            self.rows[-1].append(TableCell(" ".join("".join(self._cell).split()), header, colspan, rowspan))
            self._cell = None


def _span(value: str | None) -> int:
    try:
        return min(MAX_SPAN, max(1, int((value or "1").strip())))
    except ValueError:
        return 1
