"""The tray icon's picture for each engine state (the tooltip's words are in status_words.py).

Drawn with PIL at run time so there is no asset to ship and every state (including a download
percentage) can be shown. A badge in the lower-right corner carries the state; its colour alone
already tells ready (green), working (blue/amber) and broken (red) apart at 16 px.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from dotocr.engine import EngineState, Status

SIZE = 64

_BADGE_COLOURS = {
    Status.UNLOADED: (150, 150, 150),
    Status.DOWNLOADING: (230, 150, 20),
    Status.LOADING: (230, 150, 20),
    Status.READY: (40, 170, 80),
    Status.BUSY: (40, 110, 220),
    Status.ERROR: (210, 40, 40),
}
_PAGE = (245, 245, 245)
_INK = (60, 60, 60)
_OUTLINE = (40, 40, 40)


def draw_icon(state: EngineState, size: int = SIZE) -> Image.Image:
    """A page with text lines and a state badge; RGBA so the tray background shows around it."""
    scale = size / SIZE
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return (round(x0 * scale), round(y0 * scale), round(x1 * scale), round(y1 * scale))

    draw.rounded_rectangle(box(6, 2, 50, 58), radius=round(6 * scale), fill=_PAGE,
                           outline=_OUTLINE, width=max(1, round(3 * scale)))
    for y, right in ((14, 42), (24, 38), (34, 42), (44, 30)):
        draw.rectangle(box(14, y, right, y + 4), fill=_INK)

    colour = _BADGE_COLOURS.get(state.status, _BADGE_COLOURS[Status.ERROR])
    badge = box(30, 30, 63, 63)
    draw.ellipse(badge, fill=colour, outline=(255, 255, 255), width=max(1, round(2 * scale)))
    _draw_badge_mark(draw, state, badge, scale)
    return image


def _draw_badge_mark(draw: ImageDraw.ImageDraw, state: EngineState,
                     badge: tuple[int, int, int, int], scale: float) -> None:
    x0, y0, x1, y1 = badge
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    white = (255, 255, 255)
    width = max(1, round(4 * scale))
    if state.status is Status.READY:
        draw.line([(cx - 8 * scale, cy), (cx - 2 * scale, cy + 7 * scale), (cx + 9 * scale, cy - 7 * scale)],
                  fill=white, width=width, joint="curve")
    elif state.status is Status.ERROR:
        draw.line([(cx, cy - 9 * scale), (cx, cy + 3 * scale)], fill=white, width=width)
        draw.ellipse((cx - 2.5 * scale, cy + 6 * scale, cx + 2.5 * scale, cy + 11 * scale), fill=white)
    elif state.status is Status.BUSY:
        for dx in (-8, 0, 8):
            r = 3 * scale
            draw.ellipse((cx + dx * scale - r, cy - r, cx + dx * scale + r, cy + r), fill=white)
    elif state.status is Status.DOWNLOADING and state.progress is not None:
        percent = f"{max(0, min(99, int(state.progress * 100)))}"
        font = ImageFont.load_default(size=max(8, round(15 * scale)))
        draw.text((cx, cy), percent, fill=white, font=font, anchor="mm")
    elif state.status is Status.DOWNLOADING:  # no percentage known yet: a down arrow
        draw.line([(cx, cy - 9 * scale), (cx, cy + 7 * scale)], fill=white, width=width)
        draw.line([(cx - 7 * scale, cy), (cx, cy + 8 * scale), (cx + 7 * scale, cy)], fill=white, width=width)
    elif state.status is Status.LOADING:
        inset = 7 * scale
        draw.arc((x0 + inset, y0 + inset, x1 - inset, y1 - inset), start=-60, end=210, fill=white,
                 width=width)
    # unloaded: the grey badge alone says "not in memory"

