"""HTML tables, as dots.ocr writes a Table cell's text, read into rows and written as other table formats."""

from __future__ import annotations

from html.parser import HTMLParser


def html_table_to_markdown(html: str) -> str | None:
    """A Markdown table for a plain HTML table; None when Markdown cannot hold it (spans, nesting, prose)."""
    reader = _TableReader()
    try:
        reader.feed(html)
        reader.close()
    except _NotPlain:
        return None
    rows = [row for row in reader.rows if row]
    if not rows or reader.outside_text.strip():
        return None
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    lines = [_markdown_row(rows[0]), "| " + " | ".join(["---"] * width) + " |"]
    lines.extend(_markdown_row(row) for row in rows[1:])
    return "\n".join(lines)


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


class _NotPlain(Exception):
    """The table uses something a Markdown table cannot express."""


class _TableReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.outside_text = ""
        self._cell: list[str] | None = None
        self._tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._tables += 1
            if self._tables > 1:
                raise _NotPlain
        elif tag == "tr":
            self._finish_cell()
            self.rows.append([])
        elif tag in ("td", "th"):
            for name, value in attrs:
                if name in ("rowspan", "colspan") and (value or "1").strip() not in ("", "1"):
                    raise _NotPlain
            self._finish_cell()
            if not self.rows:
                self.rows.append([])
            self._cell = []
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
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
