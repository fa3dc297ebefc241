"""The result window: beside the selection, the text as it is read, then editable, with its copy buttons.

While a read runs, the window pulls the streamed text and the progress from the `Reading` every `POLL_MS`
(elapsed time, tokens, tokens per second); Esc, Cancel or closing it stops the read. When the read ends, the
text goes in whole (the answer as formatted, e.g. Markdown made from layout cells), editable, with the
low-confidence spans underlined and one button per copy choice; the window then closes by itself after
`AUTO_CLOSE_S` unless the pointer is over it or the text was edited. Tk thread only.

Size, fonts and gaps follow the DPI of the monitor it opens on (`capture.monitor_dpi`), so it reads the same
under the system's scaling; its position comes from `capture.place_near`, so it is never off-screen.
"""

from __future__ import annotations

import logging
import sys
import time
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable, Sequence
from tkinter import ttk
from typing import Any

from dotocr.capture import BASE_DPI, Monitor, Rect, list_monitors, monitor_at, monitor_dpi, place_near, work_area
from dotocr.tray.messages import progress_line
from dotocr.tray.reading import Reading
from dotocr.tray.result_display import CopyChoice, CopyError, Span
from dotocr.tray.spans import segments
from dotocr.tray.text_area import TextArea, make_text_area

log = logging.getLogger(__name__)

WINDOW_CLASS = "DotocrResult"
"""What `xdotool search --class` and tests look for."""
POLL_MS = 50
"""How often a running read's text and progress are pulled: smooth streaming, little work."""
IDLE_POLL_MS = 200
AUTO_CLOSE_S = 6.0
WIDTH, HEIGHT, MIN_WIDTH = 560, 250, 420
"""The window's size in pixels at 100 % scaling; it is as wide as the selection between MIN_WIDTH and WIDTH."""
GAP = 10
"""Pixels between the selection and the window, at 100 %."""
FRAME_ALLOWANCE = 34
"""Room for the window manager's title bar, which sits outside the geometry Tk sets, at 100 %."""
TEXT_PX, UI_PX = 15, 13
"""Font sizes in pixels at 100 % (11 and 10 points at 96 DPI)."""
PROBLEM_COLOUR = "#b91c1c"
MUTED_COLOUR = "#555555"
LEGEND = "Underlined: the reader was unsure there; worth a look."
"""Shown under the text only when something is underlined: the mark explains itself, no tooltip needed."""


def scale_for(root: tk.Misc, monitor: Monitor | None) -> float:
    """The monitor's scaling (1.0 = 96 DPI), from what the system says for it, else what Tk measured."""
    dpi = monitor_dpi(monitor) if monitor is not None else None
    if dpi is None:
        dpi = float(root.winfo_fpixels("1i"))
    return max(1.0, min(dpi / BASE_DPI, 4.0))


class ResultWindow:
    def __init__(self, root: tk.Misc, reading: Reading, on_cancel: Callable[[], Any], *,
                 monitors: Callable[[], Sequence[Monitor]] = list_monitors, auto_close_s: float = AUTO_CLOSE_S
                 ) -> None:
        self._root = root
        self._reading = reading
        self._on_cancel = on_cancel
        self._auto_close_s = auto_close_s
        self._state = "reading"
        self._shown = 0
        self._choices: list[CopyChoice] = []
        self._deadline: float | None = None
        self._stays = False
        self._after: str | None = None

        anchor, monitor = _anchor_and_monitor(root, reading.anchor, monitors)
        self.scale = scale = scale_for(root, monitor)
        self.text_font = _font(root, "TkTextFont", round(TEXT_PX * scale))
        self.ui_font = _font(root, "TkDefaultFont", round(UI_PX * scale))
        self.window = top = tk.Toplevel(root, class_=WINDOW_CLASS)
        top.withdraw()
        top.title("dotocr \u00b7 reading")
        top.protocol("WM_DELETE_WINDOW", self._escape)
        top.attributes("-topmost", True)
        _style(root, self.ui_font)

        body = ttk.Frame(top, padding=round(8 * scale), style="Dotocr.TFrame")
        body.pack(fill="both", expand=True)
        self.status = ttk.Label(body, text="Reading the picture\u2026", style="Dotocr.TLabel", anchor="w")
        self.status.pack(fill="x", pady=(0, round(6 * scale)))
        self.area: TextArea = make_text_area(body, font=self.text_font, on_key=self._copy_key, on_escape=self._escape)
        self.legend = ttk.Label(body, text=LEGEND, style="Muted.Dotocr.TLabel", anchor="w")
        """Packed under the text by `finish` when a span is underlined."""
        self.buttons = ttk.Frame(body, style="Dotocr.TFrame")
        # the buttons (and the legend) first, from the bottom: when the window is short the text gives way
        self.buttons.pack(side="bottom", fill="x", pady=(round(8 * scale), 0))
        self.area.frame.pack(fill="both", expand=True)
        self.close_button = ttk.Button(self.buttons, text="Cancel", command=self._escape, style="Dotocr.TButton")
        self.close_button.pack(side="right")
        self.countdown = ttk.Label(self.buttons, text="", style="Muted.Dotocr.TLabel")
        self.countdown.pack(side="right", padx=round(8 * scale))
        _enter_invokes(self.close_button)
        top.bind("<Escape>", lambda _e: self._escape())

        width = max(round(MIN_WIDTH * scale), min(anchor.width, round(WIDTH * scale)))
        height, frame = round(HEIGHT * scale), round(FRAME_ALLOWANCE * scale)
        area = work_area(monitor).inset(round(8 * scale)) if monitor is not None else None
        if area is not None:
            spot = place_near(anchor, area, width, height + frame, round(GAP * scale))
            width, height = spot.width, spot.height - frame
            x, y = spot.left, spot.top + frame
        else:
            x, y = anchor.left, anchor.bottom + round(GAP * scale)
        top.geometry(f"{width}x{height}+{x}+{y}")
        self.placed = Rect(x, y, width, height)
        """Where the window was put (physical, desktop-absolute pixels), for tests and the log."""
        top.deiconify()
        top.lift()
        top.focus_force()
        self.close_button.focus_set()
        self._tick()

    # -- what the display calls --------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state != "closed"

    @property
    def reading(self) -> bool:
        return self._state == "reading"

    @property
    def edited(self) -> bool:
        return self._state == "done" and self.area.edited()

    def finish(self, text: str | None, *, status: str, problem: bool = False,
               copy_choices: Sequence[CopyChoice] = (), low_confidence: Sequence[Span] = ()) -> None:
        """The read ended: the final text in (None keeps what streamed), the status line, the copy buttons, and
        the countdown to closing (none after a problem: its sentence stays until the window is closed)."""
        if self._state != "reading":
            return
        self._state = "done"
        self._pull()
        final = self.area.get_text() if text is None else text
        self.area.set_text(final, low_confidence)
        if any(underlined for _piece, underlined in segments(final, low_confidence)):
            self.legend.pack(side="bottom", fill="x", pady=(round(4 * self.scale), 0), before=self.area.frame)
        self.area.set_editable(True)
        self.window.title("dotocr \u00b7 " + ("problem" if problem else "result"))
        self.status.configure(text=status, style="Problem.Dotocr.TLabel" if problem else "Dotocr.TLabel")
        self.close_button.configure(text="Close")
        self._choices = list(copy_choices)
        row = self._copy_row()
        for label, _action in self._choices:
            button = ttk.Button(row, text=label, style="Dotocr.TButton", command=lambda label=label: self.copy(label))
            _enter_invokes(button)
            button.pack(side="left", padx=(0, round(6 * self.scale)))
            if row is self.buttons:
                button.lower(self.close_button)  # Tab goes text, copy buttons, Close: the stacking order
        self._stays = problem
        self._deadline = None if problem else time.monotonic() + self._auto_close_s
        if self.window.focus_get() is not None:
            self.area.focus()

    def _copy_row(self) -> ttk.Frame:
        """Where the copy buttons go: beside Close for one, a row of their own above it for several ("Copy as
        Markdown", "Copy as table"), so none is squeezed in the window's width."""
        if len(self._choices) < 2:
            return self.buttons
        row = ttk.Frame(self.buttons.master, style="Dotocr.TFrame")
        row.pack(side="bottom", fill="x", pady=(round(8 * self.scale), 0), after=self.buttons)
        row.lower(self.buttons)  # Tab goes text, copy buttons, Close: the stacking order
        return row

    def copy(self, label: str | None = None) -> bool:
        """Run the copy choice `label` (the first when None) on the text as it is now; the status line says how
        it went."""
        choice = next((c for c in self._choices if label is None or c[0] == label), None)
        if choice is None:
            return False
        return self._run_copy(choice, self.area.get_text())

    def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        if self._after is not None:
            self.window.after_cancel(self._after)
        self.window.destroy()

    # -- Tk events -----------------------------------------------------------------------------------------

    def _escape(self) -> None:
        """Esc, the Cancel/Close button, or the window's own close box: a read is stopped, a result closed."""
        if self._state == "reading":
            self._on_cancel()
        self.close()

    def _copy_key(self, _event: tk.Event) -> str | None:
        """Ctrl+C: the selection, or everything when nothing is selected, through the plain copy choice; while
        reading, Tk's own copy of the selection."""
        if not self._choices:
            return None
        self._run_copy(self._choices[0], self.area.selected_text() or self.area.get_text())
        return "break"

    def _run_copy(self, choice: CopyChoice, text: str) -> bool:
        label, action = choice
        try:
            action(text)
        except CopyError as exc:
            self.status.configure(text=f"Not copied: {exc}", style="Problem.Dotocr.TLabel")
            return False
        except Exception as exc:
            log.exception("The copy choice %r failed", label)
            self.status.configure(text=f"Not copied: {exc}", style="Problem.Dotocr.TLabel")
            return False
        count = len(text)
        what = "" if label == "Copy" else f" ({label.removeprefix('Copy ').strip()})"
        self.status.configure(text=f"Copied {count:,} character{'' if count == 1 else 's'} again{what}.",
                              style="Dotocr.TLabel")
        return True

    def _tick(self) -> None:
        self._after = None
        if self._state == "closed":
            return
        if self._state == "reading":
            self._pull()
            self.status.configure(text=progress_line(self._reading.progress()))
        else:
            self._count_down()
        if self._state != "closed":
            self._after = self.window.after(POLL_MS if self._state == "reading" else IDLE_POLL_MS, self._tick)

    def _pull(self) -> None:
        new = self._reading.text_from(self._shown)
        if new:
            self._shown += len(new)
            self.area.append(new)

    def _count_down(self) -> None:
        if self._deadline is None:
            return
        if self.area.edited():
            self._deadline = None
            self.countdown.configure(text="")
            return
        now = time.monotonic()
        if self.pointer_over():
            self._deadline = now + self._auto_close_s
            self.countdown.configure(text="")
            return
        left = self._deadline - now
        if left <= 0:
            self.close()
            return
        self.countdown.configure(text=f"Closes in {int(left + 0.999)} s")

    def pointer_over(self) -> bool:
        top = self.window
        x, y = top.winfo_pointerxy()
        left, upper = top.winfo_rootx(), top.winfo_rooty()
        return left <= x < left + top.winfo_width() and upper <= y < upper + top.winfo_height()


# -- helpers ---------------------------------------------------------------------------------------------


def _anchor_and_monitor(root: tk.Misc, anchor: Any, monitors: Callable[[], Sequence[Monitor]]
                        ) -> tuple[Rect, Monitor | None]:
    """The rectangle to sit beside and the monitor it is on: a selected region's own monitor; for a point (a
    file, the clipboard) or nothing, the monitor under it or under the pointer."""
    if anchor is not None and hasattr(anchor, "monitor"):
        return Rect(anchor.left, anchor.top, anchor.width, anchor.height), anchor.monitor
    rect = anchor if isinstance(anchor, Rect) else Rect(*root.winfo_pointerxy(), 1, 1)
    try:
        found = list(monitors())
    except Exception:  # no monitor list (a screen that cannot be read): Tk's own screen size is the monitor
        log.debug("Listing the monitors failed", exc_info=True)
        found = [Monitor(0, 0, 0, root.winfo_screenwidth(), root.winfo_screenheight())]
    return rect, monitor_at(rect.left, rect.top, found) if found else None


def _font(root: tk.Misc, base: str, pixels: int) -> tkfont.Font:
    """A copy of Tk's named font at `pixels` pixels (a negative size is pixels in Tk), so the system's scaling,
    not Tk's guess of the screen's size, decides how big the text is."""
    font = tkfont.nametofont(base, root=root).copy()
    font.configure(size=-max(8, pixels))
    return font


def _style(root: tk.Misc, font: tkfont.Font) -> None:
    style = ttk.Style(root)
    if sys.platform.startswith("linux") and style.theme_use() == "default":
        style.theme_use("clam")  # Tk's X11 default theme looks like 1995; clam is its tidy one
    style.configure("Dotocr.TFrame")
    style.configure("Dotocr.TLabel", font=font)
    style.configure("Muted.Dotocr.TLabel", font=font, foreground=MUTED_COLOUR)
    style.configure("Problem.Dotocr.TLabel", font=font, foreground=PROBLEM_COLOUR)
    style.configure("Dotocr.TButton", font=font)


def _enter_invokes(button: ttk.Button) -> None:
    """Enter presses a focused button, as Space does (Tk binds only Space)."""
    button.bind("<Return>", lambda _e: button.invoke())
    button.bind("<KP_Enter>", lambda _e: button.invoke())
