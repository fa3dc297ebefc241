"""Realistic dots.ocr answers of four kinds, built from real documents' text, for the speculative-decoding replay.

    python benchmarks/speculation_corpus.py            # writes benchmarks/corpus/answers.jsonl.gz

Random weights say nothing about how often drafted tokens would be accepted; the real model's greedy answer
would. So the replay (`speculation_replay.py`) lets an answer stand in for the model: these answers are what
dots.ocr writes for screen crops, in its own formats, with real text in them:

- `layout_json`: the layout prompts' answer, `[{"bbox": [x1, y1, x2, y2], "category": ..., "text": ...}, ...]`
  for a crop holding a run of consecutive blocks of a PDF page: lines and blocks come from the PDF's text layer
  with positions (pypdfium2), boxes in the crop's pixels at 200 DPI (dots.ocr's rendering), categories from the
  block's shape (page header and footer, section header, list item, text), Markdown in the text as dots.ocr
  writes it (`## ` headers, `- ` items);
- `html_table`: a table crop as dots.ocr writes tables, `<table><thead><tr><th>...`, from real tabular data;
- `markdown_table`: the same kind of data as a Markdown table;
- `prose`: paragraphs of running text, as the text prompt's answer.

Sources, all shipped in Debian packages on this machine and free to redistribute (benchmarks/corpus/SOURCES.md):
the GNU libtasn1 manual (GFDL 1.3) and the shared-mime-info specification (GPL 2+) as PDFs; the GNU GPL 3,
LGPL 2.1, GFDL 1.3, MPL 2.0 and Apache 2.0 texts (/usr/share/common-licenses, verbatim copying allowed); the
iso-codes tables of countries, currencies and scripts (LGPL 2.1+); tzdata's zone1970.tab (public domain);
netbase's /etc/services (GPL 2). The selection is seeded, so the same machine builds the same file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "corpus" / "answers.jsonl.gz"
PDFS = ("/usr/share/doc/libtasn1-doc/libtasn1.pdf", "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
LICENCES = ("GPL-3", "LGPL-2.1", "GFDL-1.3", "MPL-2.0", "Apache-2.0")
DPI = 200
PER_KIND = 250
MAX_CHARS = 1600
"""An answer for one screen crop: up to ~400 Qwen tokens, what `--max-new-tokens` budgets of 256-512 cover."""


# -- layout JSON from PDF text layers -------------------------------------------------------------------------

def page_lines(page) -> list[dict]:
    """Text lines of a page: runs on one baseline joined left to right, with their box in PDF points."""
    text = page.get_textpage()
    runs = []
    for i in range(text.count_rects()):
        left, bottom, right, top = text.get_rect(i)
        piece = text.get_text_bounded(left, bottom, right, top).replace("\r", "").replace("\n", " ")
        piece = piece.replace("\x02", "\x00")  # pdfium's mark of a word hyphenated at the line end
        if piece.strip():
            runs.append((left, bottom, right, top, piece))
    runs.sort(key=lambda r: (-round((r[1] + r[3]) / 2), r[0]))
    lines: list[dict] = []
    for left, bottom, right, top, piece in runs:
        middle = (bottom + top) / 2
        if lines and abs(lines[-1]["middle"] - middle) < 2.5:
            line = lines[-1]
            line["text"] = (line["text"].rstrip() + " " + piece.strip()) if left - line["right"] > 1.5 \
                else line["text"] + piece
            line.update(left=min(line["left"], left), right=max(line["right"], right),
                        bottom=min(line["bottom"], bottom), top=max(line["top"], top))
        else:
            lines.append({"left": left, "right": right, "bottom": bottom, "top": top, "middle": middle,
                          "text": piece})
    for line in lines:
        line["text"] = re.sub(r"\s+", " ", line["text"]).strip()
    return [line for line in lines if line["text"]]


def _join(first: str, second: str) -> str:
    """Two lines of one block: a word hyphenated at the end of the first is joined again."""
    if first.endswith("\x00"):
        return first[:-1] + second
    return first + " " + second


def page_blocks(page) -> list[dict]:
    """Lines grouped into blocks (paragraphs, headers, items), with a dots.ocr category and Markdown text."""
    width, height = page.get_size()
    blocks: list[dict] = []
    for line in page_lines(page):
        item = re.match(r"^(•|–|-|\*|\d+\.)\s", line["text"])
        header = re.match(r"^(Chapter \d+|\d+(\.\d+)*)\s+[A-Z]", line["text"]) and len(line["text"]) < 70
        if line["top"] > height - 70:
            category = "Page-header"
        elif line["bottom"] < 60:
            category = "Page-footer"
        elif header:
            category = "Section-header"
        elif item:
            category = "List-item"
        else:
            category = "Text"
        last = blocks[-1] if blocks else None
        gap = (last["bottom"] - line["top"]) if last else 1e9
        joins = (last is not None and category in ("Text",) and last["category"] in ("Text", "List-item")
                 and gap < 0.8 * (line["top"] - line["bottom"]) and abs(line["left"] - last["left"]) < 40)
        if joins:
            last["text"] = _join(last["text"], line["text"])
            last.update(left=min(last["left"], line["left"]), right=max(last["right"], line["right"]),
                        bottom=line["bottom"])
            continue
        text = line["text"]
        if category == "Section-header":
            text = ("# " if text.startswith("Chapter") else "## ") + text
        elif category == "List-item":
            text = "- " + re.sub(r"^(•|–|-|\*)\s+", "", text)
        blocks.append({**line, "category": category, "text": text})
    return blocks


def layout_answers(rng: random.Random) -> Iterator[dict]:
    import pypdfium2 as pdfium

    scale = DPI / 72
    for path in PDFS:
        document = pdfium.PdfDocument(path)
        for number in range(len(document)):
            page = document[number]
            _, height = page.get_size()
            blocks = page_blocks(page)
            start = 0
            while start < len(blocks):
                window = blocks[start:start + rng.randint(1, 6)]
                start += len(window)
                x0 = min(b["left"] for b in window) - 10
                y0 = height - max(b["top"] for b in window) - 10
                cells = []
                for block in window:
                    block["text"] = block["text"].replace("\x00", "-")
                    box = [round((block["left"] - x0) * scale), round((height - block["top"] - y0) * scale),
                           round((block["right"] - x0) * scale), round((height - block["bottom"] - y0) * scale)]
                    cells.append({"bbox": box, "category": block["category"], "text": block["text"]})
                answer = json.dumps(cells, ensure_ascii=False)
                while len(answer) > MAX_CHARS and len(cells) > 1:
                    cells.pop()
                    answer = json.dumps(cells, ensure_ascii=False)
                yield {"kind": "layout_json", "source": f"{Path(path).name} page {number + 1}", "answer": answer}


# -- tables from real tabular data ---------------------------------------------------------------------------

def datasets() -> list[tuple[str, list[str], list[list[str]]]]:
    """(source, header, rows) of each real table."""
    found = []
    iso = Path("/usr/share/iso-codes/json")
    for name, key, columns in (("iso_3166-1.json", "3166-1", ("alpha_2", "alpha_3", "numeric", "name",
                                                                  "official_name")),
                               ("iso_4217.json", "4217", ("alpha_3", "numeric", "name")),
                               ("iso_15924.json", "15924", ("alpha_4", "numeric", "name"))):
        entries = json.loads((iso / name).read_text())[key]
        header = [c.replace("_", " ").title() for c in columns]
        found.append((f"iso-codes {name}", header, [[e.get(c, "") for c in columns] for e in entries]))
    zones = [line.split("\t") for line in Path("/usr/share/zoneinfo/zone1970.tab").read_text().splitlines()
             if line and not line.startswith("#")]
    found.append(("tzdata zone1970.tab", ["Codes", "Coordinates", "TZ", "Comments"],
                  [(row + [""] * 4)[:4] for row in zones]))
    services = []
    for line in Path("/etc/services").read_text().splitlines():
        body, _, comment = line.partition("#")
        fields = body.split()
        if len(fields) >= 2:
            services.append([fields[0], fields[1], " ".join(fields[2:]), comment.strip()])
    found.append(("netbase /etc/services", ["Service", "Port/Protocol", "Aliases", "Comment"], services))
    return found


def table_slices(rng: random.Random, count: int) -> Iterator[tuple[str, list[str], list[list[str]]]]:
    tables = datasets()
    for _ in range(count):
        source, header, rows = rng.choice(tables)
        keep = sorted(rng.sample(range(len(header)), rng.randint(min(2, len(header)), len(header))))
        size = rng.randint(3, 20)
        start = rng.randrange(max(1, len(rows) - size))
        body = [[row[i] for i in keep] for row in rows[start:start + size]]
        yield source, [header[i] for i in keep], body


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fitted(make, header: list[str], rows: list[list[str]]) -> str:
    answer = make(header, rows)
    while len(answer) > MAX_CHARS and len(rows) > 2:
        rows = rows[:-1]
        answer = make(header, rows)
    return answer


# -- prose ---------------------------------------------------------------------------------------------------

def paragraphs() -> list[tuple[str, str]]:
    found = []
    for name in LICENCES:
        text = Path("/usr/share/common-licenses", name).read_text(encoding="utf-8", errors="replace")
        for block in re.split(r"\n\s*\n", text):
            flat = re.sub(r"\s+", " ", block).strip()
            if len(flat) > 80:
                found.append((name, flat))
    return found


def prose_answers(rng: random.Random, count: int) -> Iterator[dict]:
    source = paragraphs()
    for _ in range(count):
        start = rng.randrange(len(source) - 3)
        chosen = [text for _, text in source[start:start + rng.randint(1, 3)]]
        answer = "\n\n".join(chosen)[:MAX_CHARS].rsplit(" ", 1)[0]
        yield {"kind": "prose", "source": source[start][0], "answer": answer}


def build(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    layout = list(layout_answers(rng))
    answers = rng.sample(layout, min(PER_KIND, len(layout))) if len(layout) > PER_KIND else layout
    for source, header, rows in table_slices(rng, PER_KIND):
        answers.append({"kind": "html_table", "source": source, "answer": fitted(html_table, header, rows)})
    for source, header, rows in table_slices(rng, PER_KIND):
        answers.append({"kind": "markdown_table", "source": source, "answer": fitted(markdown_table, header, rows)})
    answers.extend(prose_answers(rng, PER_KIND))
    return answers


def load(path: Path = OUT) -> list[dict]:
    """The corpus as written: one dict per answer (kind, source, answer)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    answers = build(args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(out, "wb", mtime=0) as raw:
        raw.write("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers).encode("utf-8"))
    counts: dict[str, int] = {}
    for answer in answers:
        counts[answer["kind"]] = counts.get(answer["kind"], 0) + 1
    print(f"{out}: {counts}, {out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
