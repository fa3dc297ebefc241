"""Draw docs/sample.png, the picture the README's first command reads: a small window with a few lines of text and a
table, as a screenshot would show them. Pillow's own font, so it draws the same anywhere; 16 grey levels, so the
file stays small. Run from the repository root: python scripts/make_sample_picture.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 360
LINES = ("Press the hotkey, drag over anything on screen,", "and the text lands on your clipboard.")
TABLE = (("Item", "Qty", "Price"), ("Green tea", "2", "3.50"), ("Coffee beans", "1", "8.90"),
         ("Oat milk", "3", "1.75"))
COLUMNS = (40, 260, 360, 480)
"""The table's column lines, x in pixels."""


def draw() -> Image.Image:
    picture = Image.new("L", (WIDTH, HEIGHT), 236)
    pen = ImageDraw.Draw(picture)
    pen.rectangle((0, 0, WIDTH - 1, 29), fill=52)
    pen.text((12, 7), "Weekly order - Notes", fill=235, font=ImageFont.load_default(size=14))
    pen.rectangle((16, 44, WIDTH - 17, HEIGHT - 17), fill=255, outline=200)
    pen.text((40, 60), "Weekly order", fill=20, font=ImageFont.load_default(size=24))
    body = ImageFont.load_default(size=17)
    for row, line in enumerate(LINES):
        pen.text((40, 100 + 26 * row), line, fill=30, font=body)
    top, height = 168, 32
    for row, cells in enumerate(TABLE):
        y = top + height * row
        if row == 0:
            pen.rectangle((COLUMNS[0], y, COLUMNS[-1], y + height), fill=228)
        for column, text in enumerate(cells):
            pen.text((COLUMNS[column] + 10, y + 7), text, fill=20, font=body)
    for row in range(len(TABLE) + 1):
        pen.line((COLUMNS[0], top + height * row, COLUMNS[-1], top + height * row), fill=120)
    for x in COLUMNS:
        pen.line((x, top, x, top + height * len(TABLE)), fill=120)
    pen.text((40, top + height * len(TABLE) + 16), "Total: 21.15", fill=30, font=body)
    return picture.quantize(16, dither=Image.Dither.NONE)


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else Path("docs/sample.png")
    draw().save(target, optimize=True)
    print(f"{target}: {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
