"""The tray menu, built from the controller's state each time it is shown (labels and checks are callables).

Every action only posts work to the controller's queue (drained on the Tk thread), so pystray's
thread never touches Tk or blocks on the model. pystray's X11 backend has no menu of its own; there
the icon's click opens the same menu drawn with Tk (`popup_tk_menu`).
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from typing import Any

from dotocr.engine import Status
from dotocr.tray.choices import OUTPUT_CHOICES, PRECISION_KEYS, output_keys
from dotocr.tray.controller import Controller
from dotocr.tray.engine_host import api_available


def _pystray() -> Any:
    import pystray  # imported late: on X11 it connects to the display at import time

    return pystray


def build_menu(controller: Controller, *, on_open_menu: Callable[[], None] | None = None) -> Any:
    """The pystray menu. `on_open_menu` makes an invisible default item that opens a Tk menu on click
    (for backends without a native menu); otherwise the icon's click captures a region."""
    pystray = _pystray()
    Menu, Item = pystray.Menu, pystray.MenuItem
    c = controller

    def post(action: Callable[..., Any], *args: Any) -> Callable[[Any, Any], None]:
        return lambda _icon, _item: c.post(action, *args)

    def precision_item(key: str) -> Any:
        return Item(lambda _i: c.precision_label(key), post(c.set_precision, key),
                    checked=lambda _i: c.precision_choice() == key, radio=True,
                    enabled=lambda _i: c.precision_enabled(key))

    def output_item(key: str) -> Any:
        return Item(OUTPUT_CHOICES[key][0], post(c.set_output, key),
                    checked=lambda _i: c.output_choice() == key, radio=True,
                    visible=lambda _i: key in output_keys(c.settings))

    def history_items() -> Any:
        items = c.history_items()
        if not items:
            yield Item("No results yet", None, enabled=False)
        for entry in items:
            yield Item(entry.label, post(c.copy_history_item, entry))

    items: list[Any] = []
    if on_open_menu is not None:
        items.append(Item("Open menu", lambda _icon, _item: on_open_menu(), default=True, visible=False))
    items += [
        Item(lambda _i: c.status_text(), None, enabled=False),
        Item(lambda _i: f"Hotkey problem: {c.hotkey_error}", None, enabled=False,
             visible=lambda _i: c.hotkey_error is not None),
        Item("Retry loading the model", post(c.retry_load), visible=lambda _i: c.state().status is Status.ERROR),
        Menu.SEPARATOR,
        Item(lambda _i: f"Capture region\t{c.settings.hotkey}", post(c.capture),
             default=on_open_menu is None),
        Item("Repeat last region", post(c.repeat_last_region), enabled=lambda _i: c.last_region is not None),
        Item("OCR an image file\u2026", post(c.read_image_file)),
        Item("OCR the clipboard's picture", post(c.read_clipboard_picture)),
        Item("Cancel reading", post(c.cancel_reading), enabled=lambda _i: c.busy),
        Menu.SEPARATOR,
        Item("Precision", Menu(*(precision_item(key) for key in PRECISION_KEYS))),
        Item("Output", Menu(*(output_item(key) for key in OUTPUT_CHOICES))),
        Item("History", Menu(history_items)),
        Menu.SEPARATOR,
        Item("Start at login", post(c.toggle_autostart), checked=lambda _i: c.autostart_enabled(),
             visible=c.services.autostart is not None),
    ]
    if api_available():
        items.append(Item(lambda _i: f"Expose local API (127.0.0.1:{c.settings.api_port})",
                          post(c.toggle_api), checked=lambda _i: c.settings.api_enabled))
    items += [
        Item("Free GPU memory", post(c.free_memory),
             enabled=lambda _i: c.state().status in (Status.READY, Status.ERROR)),
        Item("Open settings file", post(c.open_settings_file)),
        Item("Reload settings", post(c.reload_settings)),
        Menu.SEPARATOR,
        Item("Quit", post(c.quit)),
    ]
    return Menu(*items)


def fill_tk_menu(tk_menu: tk.Menu, menu: Any, icon: Any) -> None:
    """Draw a pystray menu with Tk (clears `tk_menu` first). Clicking an entry activates the pystray item,
    so both menus share one set of actions."""
    pystray = _pystray()
    tk_menu.delete(0, "end")
    # Drop the previous drawing here, on the Tk thread: left to the garbage collector, its variables and
    # submenus could be finalised on a worker thread, which Tk refuses ("main thread is not in main loop").
    for child in tk_menu.winfo_children():
        child.destroy()
    tk_menu._dotocr_vars = []  # type: ignore[attr-defined]
    for item in menu:  # iterating a pystray Menu yields the visible items, separators tidied
        if item is pystray.Menu.SEPARATOR:
            tk_menu.add_separator()
            continue
        state = "normal" if item.enabled else "disabled"
        label = item.text.replace("\t", "    ")
        if item.submenu is not None:
            sub = tk.Menu(tk_menu, tearoff=False)
            fill_tk_menu(sub, item.submenu, icon)
            tk_menu.add_cascade(label=label, menu=sub, state=state)
        elif item.checked is not None:
            var = tk.BooleanVar(master=tk_menu, value=bool(item.checked))
            add = tk_menu.add_radiobutton if item.radio else tk_menu.add_checkbutton
            options: dict[str, Any] = {"value": True} if item.radio else {"onvalue": True, "offvalue": False}
            add(label=label, variable=var, state=state, command=lambda i=item: i(icon), **options)
            tk_menu._dotocr_vars.append(var)  # keep the vars alive while the menu shows
        else:
            tk_menu.add_command(label=label, state=state, command=lambda i=item: i(icon))


def popup_tk_menu(root: tk.Tk, menu: Any, icon: Any, x: int | None = None, y: int | None = None) -> tk.Menu:
    """Show the menu at the pointer (Tk thread). Returns the Tk menu so tests can inspect it."""
    tk_menu = getattr(root, "_dotocr_popup", None)
    if tk_menu is None:
        tk_menu = tk.Menu(root, tearoff=False)
        root._dotocr_popup = tk_menu  # type: ignore[attr-defined]
    fill_tk_menu(tk_menu, menu, icon)
    if x is None or y is None:
        x, y = root.winfo_pointerxy()
    tk_menu.tk_popup(x, y)
    return tk_menu
