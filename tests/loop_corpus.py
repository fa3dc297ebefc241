"""Real page content that repeats on purpose, as dots.ocr writes it, and text to train a tokenizer on.

The loop guard must never cut any of `LEGITIMATE`. `training_text()` is a mix of the kinds of text dots.ocr
reads (prose, HTML tables, Markdown, LaTeX, Chinese, code, rules and leaders) from which tests train a
byte-level BPE with Qwen2's pre-tokenizer, so that token counts resemble the real tokenizer's.
"""

from __future__ import annotations

import random

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
"""Qwen2's pre-tokenizer pattern (as in its tokenizer.json): digits alone, letters with one leading symbol."""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<td>{cell}</td>" for cell in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _toc() -> str:
    titles = ["Introduction", "Background and related work", "Method", "Data collection", "Model", "Training",
              "Evaluation", "Results on printed pages", "Results on handwriting", "Ablations", "Discussion",
              "Limitations", "Conclusion", "References", "Appendix A: prompts", "Appendix B: more tables"]
    lines = ["Contents", ""]
    for number, title in enumerate(titles, 1):
        leader = "." * (72 - len(title))
        lines.append(f"{number} {title} {leader} {number * 7 - 4}")
        if number % 3 == 0:
            sub = f"{number}.1 Details of {title.lower()}"
            lines.append(f"    {sub} {'.' * (68 - len(sub))} {number * 7 - 2}")
    return "\n".join(lines)


def _numbered_list() -> str:
    things = ["Check the power cable", "Open the front panel", "Remove the filter", "Clean the filter",
              "Dry it for an hour", "Put the filter back", "Close the panel", "Switch the unit on"]
    return "\n".join(f"{n}. {things[n % len(things)]} (step {n})" for n in range(1, 61))


def _blank_numbered_list() -> str:
    return "Answers:\n" + "\n".join(f"{n}. ______________________________" for n in range(1, 61))


def _markdown_table(columns: int, spaced: bool) -> str:
    header = "| " + " | ".join(f"Q{c}" for c in range(1, columns + 1)) + " |"
    separator = "|" + "|".join([" --- " if spaced else "---"] * columns) + "|"
    rows = ["| " + " | ".join(str((r * 7 + c) % 10) for c in range(columns)) + " |" for r in range(4)]
    return "\n".join([header, separator, *rows])


def _box_drawing() -> str:
    width = 200
    inside = "│" + " " * (width - 2) + "│"
    title = "│ dotocr 0.1 - build log" + " " * (width - 25) + "│"
    return "\n".join(["┌" + "─" * (width - 2) + "┐", title, inside, "├" + "─" * (width - 2) + "┤", inside,
                      "└" + "─" * (width - 2) + "┘", "=" * width, "-" * width])


LEGITIMATE: dict[str, str] = {
    "table_11_identical_rows": _table(
        ["Item", "Qty", "Unit", "Price"],
        [["Bolt M6 x 20, zinc plated", "100", "pcs", "0.12"]] * 11 + [["Nut M6", "100", "pcs", "0.05"]]),
    "form_30_empty_rows": "Visitor log\n" + _table(["Name", "Company", "Time in", "Signature"],
                                                      [[""] * 4] * 30) + "\nPage 1 of 2",
    "form_30_empty_rows_6_columns": _table(["Date", "Name", "From", "To", "Hours", "Signed"], [[""] * 6] * 30),
    "attendance_31_empty_days": _table(["Name"] + [str(d) for d in range(1, 32)],
                                       [[name] + [""] * 31 for name in ("Ann", "Bo", "Chen", "Dee")]),
    "box_drawing_200_columns": _box_drawing(),
    "toc_dot_leaders": _toc(),
    "numbered_list_to_60": _numbered_list(),
    "blank_numbered_list_to_60": _blank_numbered_list(),
    "year_table_60_rows": "| Year | Calendar |\n|---|---|\n" + "".join(f"| {n} | {2000 + n} |\n" for n in range(1, 61)),
    "markdown_separator_30_columns": _markdown_table(30, spaced=False),
    "markdown_spaced_separator_30_columns": _markdown_table(30, spaced=True),
    "chinese_repeated_characters": (
        "他笑着说：“哈哈哈哈哈哈哈哈，好好好，走走走！”大家都说谢谢谢谢。\n"
        "人人为我，我为人人。天天向上，年年有余，步步高升。\n"
        "姓名：＿＿＿＿＿＿＿＿＿＿　日期：＿＿＿＿＿＿\n"
        "……………………\n——————————————\n"
        "一一一一一一一一一一一一一一一一\n"
        "第一章 总则 ………………………………………… 1\n第二章 细则 ………………………………………… 9"),
    "formula_repeated_terms": (
        "$$\n\\underbrace{x + x + x + x + x + x + x + x + x + x + x + x}_{12\\text{ terms}} = 12x\n$$\n"
        "$$\n\\sum_{i=1}^{n} \\sum_{j=1}^{n} \\sum_{k=1}^{n} a_{i} a_{j} a_{k} = \\left( \\sum_{i=1}^{n} a_{i} "
        "\\right)^{3}\n$$\n"
        "$$\n\\mathbf{0} = \\begin{pmatrix} " + " \\\\ ".join([" & ".join(["0"] * 10)] * 10)
        + " \\end{pmatrix}\n$$\n"
        "$$\n1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 = 16\n$$"),
}


_PROSE = ("The report describes how the committee reviewed the annual budget and found that spending on "
          "maintenance had risen by a third. Members asked for a detailed breakdown before the next meeting, "
          "and the treasurer agreed to circulate the figures. Invoice number, date of issue, customer "
          "reference and payment terms are printed at the top of every page. Please return the signed form "
          "to the office before Friday. The quick brown fox jumps over the lazy dog while the results of the "
          "experiment show a clear improvement on scanned documents, receipts and handwritten notes.")
_CHINESE = ("本报告介绍了委员会审查年度预算的过程，发现维护支出增加了三分之一。请在星期五之前将签好的表格交回办公室。"
            "实验结果表明，在扫描文件、收据和手写笔记上都有明显的改进。我们的方法简单而有效。")
_CODE = ("def main(argv: list[str]) -> int:\n    for line in open(argv[1]):\n        if not line.strip():\n"
         "            continue\n        print(line.rstrip())\n    return 0\n")


def training_text(seed: int = 0, pieces: int = 600) -> list[str]:
    """Representative text of every kind dots.ocr reads; runs of rules and leaders have random lengths."""
    rng = random.Random(seed)
    words = _PROSE.replace(",", "").replace(".", "").split()
    out = []
    for _ in range(pieces):
        kind = rng.randrange(8)
        if kind == 0:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) + ".")
        elif kind == 1:
            rows = [[str(rng.randint(0, 9999)), rng.choice(words), f"{rng.random() * 100:.2f}", ""]
                    for _ in range(rng.randint(1, 6))]
            out.append(_table([rng.choice(words) for _ in range(4)], rows))
        elif kind == 2:
            columns = rng.randint(2, 8)
            out.append(_markdown_table(columns, spaced=rng.random() < 0.5))
        elif kind == 3:
            out.append(f"$$ \\frac{{{rng.choice('abcxyz')}}}{{{rng.randint(1, 9)}}} + \\sum_{{i=1}}^{{n}} x_{{i}}^{{2}}"
                       f" = \\alpha \\cdot \\beta_{{{rng.randint(0, 9)}}} $$")
        elif kind == 4:
            start = rng.randrange(len(_CHINESE) - 20)
            out.append(_CHINESE[start:start + rng.randint(10, 40)])
        elif kind == 5:
            out.append(_CODE)
        elif kind == 6:
            char = rng.choice(["─", "═", "-", "=", "_", ".", "*", "…", "—", "＿", "━"])
            out.append(rng.choice(words) + " " + char * rng.randint(3, 120) + " " + str(rng.randint(1, 300)))
        else:
            out.append(f"{rng.randint(1, 30)}. {rng.choice(words)} {rng.choice(words)}\n"
                       f"- [{rng.choice(' x')}] {rng.choice(words)}\n> {rng.choice(words)}")
    return out
