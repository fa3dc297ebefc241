"""Helpers for X11 capture tests: a known image on screen, a Tk event pump, xdotool drags."""

from __future__ import annotations

import subprocess
import time
import tkinter as tk
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageTk


def pattern_image(width: int, height: int) -> Image.Image:
    """Every pixel differs from its neighbours and from any shifted copy, so a crop that is off by one
    pixel in any direction does not compare equal."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs % 256, ys % 256, ((xs >> 8) * 16 + (ys >> 8) * 64 + 7) % 256], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def document_image(width: int, height: int) -> Image.Image:
    """A page of text and a small chart, to make the documentation screenshot read like real use."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    title = ImageFont.load_default(size=30)
    body = ImageFont.load_default(size=18)
    draw.rectangle((0, 0, width, 56), fill="#1e293b")
    draw.text((24, 12), "Quarterly report - draft", font=title, fill="white")
    lines = [
        "dotocr reads whatever is on screen: drag over a paragraph,",
        "a table or an error dialog and the text lands on the clipboard.",
        "",
        "Region      Units     Revenue",
        "North       1,204     $18,930",
        "South         987     $15,112",
        "East        1,530     $24,006",
        "",
        "The model stays warm in the tray between captures.",
    ]
    for number, line in enumerate(lines):
        draw.text((24, 80 + number * 28), line, font=body, fill="#111827")
    for number, value in enumerate((60, 110, 85, 140, 120)):
        left = width - 260 + number * 44
        draw.rectangle((left, 400 - value, left + 30, 400), fill="#38bdf8")
    return image


class ImageWindow:
    """A borderless window showing `image` at a fixed desktop position (no window manager needed)."""

    def __init__(self, root: tk.Tk, image: Image.Image, left: int, top: int) -> None:
        self.root, self.image, self.left, self.top = root, image, left, top
        self.window = tk.Toplevel(root, class_="DotocrTestImage")
        self.window.overrideredirect(True)
        self.window.geometry(f"{image.width}x{image.height}+{left}+{top}")
        self.photo = ImageTk.PhotoImage(image, master=self.window)
        label = tk.Label(self.window, image=self.photo, borderwidth=0, highlightthickness=0)
        label.place(x=0, y=0)
        pump_until(root, lambda: bool(self.window.winfo_viewable()), timeout=5)
        self.settle()

    def settle(self, timeout: float = 5.0) -> None:
        """Turn the Tk loop until the screen really shows the image (after an overlay closes, for one)."""
        from dotocr.capture.screens import grab_rect

        box = (self.left, self.top, self.image.width, self.image.height)
        pump_until(self.root, lambda: same_pixels(grab_rect(*box), self.image, quiet=True), timeout=timeout)

    def destroy(self) -> None:
        self.window.destroy()


def pump(root: tk.Tk, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        root.update()
        time.sleep(0.002)


def pump_until(root: tk.Tk, condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Run the Tk loop until `condition()` holds; return the seconds it took. Fails on timeout."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        root.update()
        time.sleep(0.001)
    return time.perf_counter() - start


def xdotool_async(*args: str) -> subprocess.Popen[str]:
    """Start xdotool without waiting, so the test can keep the Tk loop turning meanwhile."""
    return subprocess.Popen(["xdotool", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def drag_args(start: tuple[int, int], end: tuple[int, int], *, release: bool = True) -> list[str]:
    """xdotool words for a left-button drag in desktop coordinates, with a stop half way."""
    (x0, y0), (x1, y1) = start, end
    words = ["mousemove", str(x0), str(y0), "mousedown", "1"]
    words += ["mousemove", str((x0 + x1) // 2), str((y0 + y1) // 2), "sleep", "0.05"]
    words += ["mousemove", str(x1), str(y1), "sleep", "0.05"]
    if release:
        words += ["mouseup", "1"]
    return words


def same_pixels(actual: Image.Image, expected: Image.Image, *, quiet: bool = False) -> bool:
    """Exact equality of size and RGB pixels; prints how far off a mismatch is, to ease debugging."""
    if actual.size != expected.size:
        if not quiet:
            print(f"size {actual.size} != {expected.size}")
        return False
    a = np.asarray(actual.convert("RGB"), dtype=np.int16)
    b = np.asarray(expected.convert("RGB"), dtype=np.int16)
    differing = int(np.any(a != b, axis=-1).sum())
    if differing and not quiet:
        print(f"{differing} of {a.shape[0] * a.shape[1]} pixels differ")
    return differing == 0
