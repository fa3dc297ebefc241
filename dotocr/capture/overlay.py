"""The region-selection overlay: every monitor frozen and dimmed, drag a rectangle, get the crop.

One borderless topmost Tk window covers each monitor exactly, in physical pixels. The crop is cut
from the frozen screenshot, so what the person saw while dragging is exactly what gets read, even if
the screen changed underneath. Everything runs on the Tk thread and nothing blocks.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageTk

from dotocr.capture.region import Region
from dotocr.capture.screens import Monitor, grab_all

OnDone = Callable[[Region | None, Image.Image | None], None]

WINDOW_CLASS = "DotocrOverlay"  # what `xdotool search --class` and tests look for
MIN_SELECTION = 4  # physical pixels; anything narrower or shorter counts as a cancel
DIM = 0.45  # brightness kept outside the selection
ACCENT = "#38bdf8"
_DIM_TABLE = [int(value * DIM) for value in range(256)] * 3


def geometry_string(monitor: Monitor) -> str:
    """Tk geometry for a window covering the monitor. Tk needs "+-1920+0" for a negative offset;
    "-1920" would mean "1920 pixels from the right edge"."""
    return f"{monitor.width}x{monitor.height}+{monitor.left}+{monitor.top}"


def dimmed(image: Image.Image) -> Image.Image:
    """The darkened backdrop; one lookup-table pass, a few milliseconds at 1920x1080."""
    return _rgb(image).point(_DIM_TABLE)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def selection_box(start: tuple[int, int], end: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """x, y, width, height of the drag from `start` to `end`, both pixels included, clamped to the monitor."""
    x0, y0 = (min(max(v, 0), limit - 1) for v, limit in zip(start, size, strict=True))
    x1, y1 = (min(max(v, 0), limit - 1) for v, limit in zip(end, size, strict=True))
    return min(x0, x1), min(y0, y1), abs(x1 - x0) + 1, abs(y1 - y0) + 1


@dataclass(eq=False)
class _Screen:
    """One monitor's window and the canvas items drawn on it (compared by identity)."""

    monitor: Monitor
    image: Image.Image
    window: tk.Toplevel
    canvas: tk.Canvas
    dim_photo: ImageTk.PhotoImage
    bright_photo: ImageTk.PhotoImage | None = None
    selection_photo: tk.PhotoImage | None = None
    items: dict[str, int] = field(default_factory=dict)


class RegionSelector:
    """Opens the overlay on request and reports one result per opening via `on_done`."""

    def __init__(self, root: tk.Tk) -> None:
        self._root = root
        self._screens: list[_Screen] = []
        self._on_done: OnDone | None = None
        self._drag: tuple[_Screen, int, int] | None = None

    @property
    def is_open(self) -> bool:
        return self._on_done is not None

    def open(self, shots: Sequence[tuple[Monitor, Image.Image]], on_done: OnDone) -> None:
        """Show the frozen `shots`; `on_done(region, crop)` runs exactly once, (None, None) on cancel."""
        if self.is_open:
            raise RuntimeError("The selection overlay is already open; close it before opening another.")
        if not shots:
            raise ValueError("The selection overlay needs at least one monitor screenshot.")
        for monitor, image in shots:
            if image.size != (monitor.width, monitor.height):
                raise ValueError(
                    f"The screenshot of monitor {monitor.index} is {image.size[0]}x{image.size[1]} "
                    f"but the monitor is {monitor.width}x{monitor.height}; grab the screens again."
                )
        self._on_done = on_done
        self._drag = None
        self._screens = [self._make_screen(monitor, image) for monitor, image in shots]
        self._root.after_idle(self._after_shown)

    def select(self, on_done: OnDone) -> None:
        """Freeze every monitor as it is now and open the overlay on them (the hotkey's and the menu's capture)."""
        self.open(grab_all(), on_done)

    def close(self) -> None:
        """Close without a selection (reported as a cancel); does nothing when not open."""
        self._finish(None, None)

    # --- building ---------------------------------------------------------------------------------

    def _make_screen(self, monitor: Monitor, image: Image.Image) -> _Screen:
        window = tk.Toplevel(self._root, class_=WINDOW_CLASS, borderwidth=0, highlightthickness=0)
        window.withdraw()
        window.title("dotocr selection")
        window.overrideredirect(True)
        window.geometry(geometry_string(monitor))
        window.attributes("-topmost", True)
        canvas = tk.Canvas(
            window,
            width=monitor.width,
            height=monitor.height,
            borderwidth=0,
            highlightthickness=0,
            cursor="crosshair",
            background="black",
        )
        canvas.place(x=0, y=0, width=monitor.width, height=monitor.height)
        dim_photo = ImageTk.PhotoImage(dimmed(image), master=window)
        screen = _Screen(monitor, image, window, canvas, dim_photo)
        canvas.create_image(0, 0, image=dim_photo, anchor="nw")
        screen.items["selection"] = canvas.create_image(0, 0, anchor="nw", state="hidden")
        screen.items["outline"] = canvas.create_rectangle(0, 0, 0, 0, outline=ACCENT, width=1, state="hidden")
        screen.items["h"] = canvas.create_line(0, 0, 0, 0, fill="white", dash=(4, 4), state="hidden")
        screen.items["v"] = canvas.create_line(0, 0, 0, 0, fill="white", dash=(4, 4), state="hidden")

        window.bind("<Escape>", lambda _e: self.close())
        window.bind("<Enter>", lambda _e: window.focus_force())
        canvas.bind("<ButtonPress-3>", lambda _e: self.close())
        canvas.bind("<ButtonPress-1>", lambda e: self._press(screen, e))
        canvas.bind("<B1-Motion>", lambda e: self._move(screen, e))
        canvas.bind("<ButtonRelease-1>", lambda e: self._release(screen, e))
        canvas.bind("<Motion>", lambda e: self._crosshair(screen, e.x, e.y))
        canvas.bind("<Leave>", lambda _e: self._hide_crosshair(screen))
        # The undimmed photo is only needed once a drag starts: build it after the first paint
        # (idle callbacks queued from <Expose> run after the canvas has redrawn).
        canvas.bind("<Expose>", lambda _e: self._root.after_idle(self._ensure_bright, screen), add="+")
        window.deiconify()
        window.lift()
        return screen

    def _after_shown(self) -> None:
        """Once mapped: keyboard focus (for Esc) to the monitor under the pointer, and its crosshair."""
        if not self.is_open:
            return
        pointer_x, pointer_y = self._root.winfo_pointerxy()
        target = next((s for s in self._screens if s.monitor.contains(pointer_x, pointer_y)), self._screens[0])
        target.window.focus_force()
        self._crosshair(target, pointer_x - target.monitor.left, pointer_y - target.monitor.top)

    def _ensure_bright(self, screen: _Screen) -> None:
        if screen.bright_photo is None and screen in self._screens:
            screen.bright_photo = ImageTk.PhotoImage(_rgb(screen.image), master=screen.window)
            screen.selection_photo = tk.PhotoImage(master=screen.window)
            screen.canvas.itemconfigure(screen.items["selection"], image=screen.selection_photo)

    # --- drawing ----------------------------------------------------------------------------------

    def _crosshair(self, screen: _Screen, x: int, y: int) -> None:
        canvas, items = screen.canvas, screen.items
        canvas.coords(items["h"], 0, y, screen.monitor.width, y)
        canvas.coords(items["v"], x, 0, x, screen.monitor.height)
        canvas.itemconfigure(items["h"], state="normal")
        canvas.itemconfigure(items["v"], state="normal")

    def _hide_crosshair(self, screen: _Screen) -> None:
        screen.canvas.itemconfigure(screen.items["h"], state="hidden")
        screen.canvas.itemconfigure(screen.items["v"], state="hidden")

    def _show_selection(self, screen: _Screen, x: int, y: int, width: int, height: int) -> None:
        """Copy the undimmed pixels of the rectangle over the dimmed backdrop, then outline it."""
        self._ensure_bright(screen)
        assert screen.selection_photo is not None and screen.bright_photo is not None
        photo = screen.selection_photo
        photo.configure(width=width, height=height)
        photo.tk.call(photo, "copy", str(screen.bright_photo), "-from", x, y, x + width, y + height, "-to", 0, 0)
        canvas, items = screen.canvas, screen.items
        canvas.coords(items["selection"], x, y)
        canvas.coords(items["outline"], x - 1, y - 1, x + width, y + height)
        if "size" not in items:  # created on first use: loading the font would slow the first frame
            items["size"] = canvas.create_text(0, 0, anchor="sw", fill="white", font=("TkDefaultFont", 10))
        label_y = y - 4 if y >= 20 else y + height + 16
        canvas.coords(items["size"], x, label_y)
        canvas.itemconfigure(items["size"], text=f"{width} \u00d7 {height}")
        for name in ("selection", "outline", "size"):
            canvas.itemconfigure(items[name], state="normal")

    # --- mouse ------------------------------------------------------------------------------------

    def _press(self, screen: _Screen, event: tk.Event) -> None:
        if self._drag is None:
            self._drag = (screen, event.x, event.y)
            self._show_selection(screen, *selection_box((event.x, event.y), (event.x, event.y), screen.image.size))

    def _move(self, screen: _Screen, event: tk.Event) -> None:
        self._crosshair(screen, event.x, event.y)
        if self._drag is not None and self._drag[0] is screen:
            start = self._drag[1:]
            self._show_selection(screen, *selection_box(start, (event.x, event.y), screen.image.size))

    def _release(self, screen: _Screen, event: tk.Event) -> None:
        if self._drag is None or self._drag[0] is not screen:
            return
        start = self._drag[1:]
        x, y, width, height = selection_box(start, (event.x, event.y), screen.image.size)
        if width < MIN_SELECTION or height < MIN_SELECTION:
            self._finish(None, None)
            return
        region = Region(screen.monitor, x, y, width, height)
        self._finish(region, screen.image.crop(region.box))

    # --- ending -----------------------------------------------------------------------------------

    def _finish(self, region: Region | None, crop: Image.Image | None) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is None:
            return
        screens, self._screens, self._drag = self._screens, [], None
        for screen in screens:
            screen.window.destroy()
        on_done(region, crop)
