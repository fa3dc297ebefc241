"""The result window's text: streamed in read-only, then selectable and editable, low-confidence spans underlined.

`TextArea` is what the window needs of it. `TkTextArea` is Tk's Text widget, used everywhere but Windows. On
Windows `native_edit.NativeTextArea` puts a real RichEdit control there instead, which screen readers read
(Tk 8.6's Text exposes nothing to UI Automation); it falls back to this one when it cannot be made.
"""

from __future__ import annotations

import logging
import sys
import tkinter as tk
from collections.abc import Callable, Sequence
from tkinter import ttk
from typing import Protocol

log = logging.getLogger(__name__)

LOW_CONFIDENCE = "low_confidence"
UNDERLINE_COLOUR = "#d97706"


class TextArea(Protocol):
    frame: tk.Widget
    """What the window lays out."""

    def append(self, text: str) -> None: ...

    def set_text(self, text: str, low_confidence: Sequence[tuple[int, int]] = ()) -> None:
        """Replace everything; underline the [start, end) character spans; nothing counts as edited yet."""
        ...

    def get_text(self) -> str: ...

    def selected_text(self) -> str: ...

    def set_editable(self, editable: bool) -> None: ...

    def edited(self) -> bool:
        """Whether the person changed the text since `set_text`."""
        ...

    def focus(self) -> None: ...

    def underlined(self) -> list[tuple[int, int]]:
        """The underlined spans as character offsets (for tests and the screen reader's description)."""
        ...


def make_text_area(master: tk.Misc, *, font: object, on_key: Callable[[object], str | None] | None = None,
                   on_escape: Callable[[], None] | None = None) -> TextArea:
    """The native RichEdit control on Windows (screen readers read it), else, or when it cannot be made, Tk's."""
    if sys.platform == "win32":
        try:
            from dotocr.tray.native_edit import NativeTextArea

            return NativeTextArea(master, font=font, on_key=on_key, on_escape=on_escape)
        except Exception as exc:  # no Msftedit.dll, a failed CreateWindowExW: Tk's Text still works
            log.warning("The native text control could not be made (%s); the result window uses Tk's Text, which "
                        "screen readers cannot read", exc)
    return TkTextArea(master, font=font, on_key=on_key)


def segments(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
    """`text` cut at the span edges: (piece, underlined). Spans outside the text are clipped, overlaps merged,
    so a caller's stale or sloppy spans never fail the window."""
    marks = [False] * len(text)
    for start, end in spans:
        for i in range(max(0, start), min(len(text), end)):
            marks[i] = True
    pieces: list[tuple[str, bool]] = []
    for i, char in enumerate(text):
        if pieces and pieces[-1][1] == marks[i]:
            pieces[-1] = (pieces[-1][0] + char, marks[i])
        else:
            pieces.append((char, marks[i]))
    return pieces


class TkTextArea:
    """Tk's Text with a scrollbar. Text is inserted piece by piece, so Tk's own character counting (which differs
    between builds for characters beyond the BMP) never meets ours."""

    def __init__(self, master: tk.Misc, *, font: object, on_key: Callable[[tk.Event], str | None] | None = None,
                 lines: int = 8) -> None:
        self.frame = ttk.Frame(master)
        self.text = tk.Text(self.frame, wrap="word", undo=True, height=lines, width=40, font=font,
                            relief="flat", borderwidth=0, highlightthickness=1, padx=6, pady=4,
                            background="white", foreground="#111111", insertbackground="#111111",
                            selectbackground="#bfdbfe", selectforeground="#111111", inactiveselectbackground="#dbeafe")
        self.scrollbar = ttk.Scrollbar(self.frame, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=self._scrolled)
        self.text.grid(row=0, column=0, sticky="nsew")
        self.scrollbar.grid(row=0, column=1, sticky="ns")
        self.frame.rowconfigure(0, weight=1)
        self.frame.columnconfigure(0, weight=1)
        self.text.tag_configure(LOW_CONFIDENCE, underline=True, underlinefg=UNDERLINE_COLOUR)
        self.text.bind("<Tab>", self._focus_next)
        self.text.bind("<Shift-Tab>", self._focus_previous)
        self.text.bind("<ISO_Left_Tab>", self._focus_previous)  # Shift+Tab on X11
        self.text.bind("<Control-a>", self._select_all)
        if on_key is not None:
            self.text.bind("<Control-c>", on_key)
        self._editable = True
        self.set_editable(False)

    def append(self, text: str) -> None:
        at_end = self.text.yview()[1] >= 0.999
        with self._writable():
            self.text.insert("end-1c", text)
        if at_end:  # follow the stream unless the person scrolled up to read
            self.text.see("end")

    def set_text(self, text: str, low_confidence: Sequence[tuple[int, int]] = ()) -> None:
        with self._writable():
            self.text.delete("1.0", "end")
            for piece, underlined in segments(text, low_confidence):
                self.text.insert("end-1c", piece, (LOW_CONFIDENCE,) if underlined else ())
        self.text.edit_reset()
        self.text.edit_modified(False)
        self.text.see("1.0")

    def get_text(self) -> str:
        return self.text.get("1.0", "end-1c")

    def selected_text(self) -> str:
        try:
            return self.text.get("sel.first", "sel.last")
        except tk.TclError:
            return ""

    def set_editable(self, editable: bool) -> None:
        self._editable = editable
        self.text.configure(state="normal" if editable else "disabled")

    def edited(self) -> bool:
        return self._editable and bool(self.text.edit_modified())

    def focus(self) -> None:
        self.text.focus_set()

    def underlined(self) -> list[tuple[int, int]]:
        ranges = self.text.tag_ranges(LOW_CONFIDENCE)
        return [(len(self.text.get("1.0", str(start))), len(self.text.get("1.0", str(end))))
                for start, end in zip(ranges[::2], ranges[1::2], strict=True)]

    def _scrolled(self, first: str, last: str) -> None:
        """The scrollbar shows only when there is something to scroll."""
        if float(first) <= 0.0 and float(last) >= 1.0:
            self.scrollbar.grid_remove()
        else:
            self.scrollbar.grid()
        self.scrollbar.set(first, last)

    def _writable(self) -> _Writable:
        return _Writable(self)

    def _focus_next(self, _event: tk.Event) -> str:
        self.text.tk_focusNext().focus_set()
        return "break"

    def _focus_previous(self, _event: tk.Event) -> str:
        self.text.tk_focusPrev().focus_set()
        return "break"

    def _select_all(self, _event: tk.Event) -> str:
        self.text.tag_add("sel", "1.0", "end-1c")
        return "break"


class _Writable:
    """Lets the program write into a read-only Text, then puts it back; what the program writes is no edit."""

    def __init__(self, area: TkTextArea) -> None:
        self.area = area

    def __enter__(self) -> None:
        self._was = self.area._editable
        self.area.text.configure(state="normal")

    def __exit__(self, *exc: object) -> None:
        if not self._was:
            self.area.text.configure(state="disabled")
