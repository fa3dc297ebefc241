"""`dotocr-tray`: the tray daemon that keeps the model warm and turns a hotkey + drag into clipboard text.

Threads: Tk's mainloop owns the main thread (the overlay and, on X11, the popup menu); pystray runs
detached on its own thread; hotkey, menu and second-instance callbacks only post to the controller's
queue, which the Tk thread drains every few milliseconds. The model loads on a worker thread after the
icon is up, so the tray is there at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dotocr.config import (
    Settings,
    SettingsFile,
    add_engine_arguments,
    add_setting_argument,
    data_dir,
    overrides_from_args,
    setting_sources,
)
from dotocr.version import VersionAction

if TYPE_CHECKING:  # the tray's own modules are imported by TrayApp: --help and --version answer without them
    from dotocr.engine import EngineState
    from dotocr.tray.engine_host import EngineFactory

log = logging.getLogger("dotocr.tray")

POLL_MS = 15
"""How often the Tk thread drains the queue: small against the 150 ms the overlay may take to appear."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dotocr-tray",
        description="Tray daemon: press the hotkey, drag over the screen, the text lands on the clipboard.",
    )
    parser.add_argument("--version", action=VersionAction)
    add_engine_arguments(parser)
    tray = parser.add_argument_group("tray")
    add_setting_argument(tray, "hotkey", help="global hotkey for this run, e.g. ctrl+alt+shift+o")
    tray.add_argument("--capture", action="store_true",
                      help="start a capture now; in the running tray if there is one")
    tray.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def default_engine_factory(settings: Settings, on_state: Callable[[Any], None]) -> Any:
    """The engine the settings ask for (imports torch, so it runs on the loader thread)."""
    from dotocr.engine import make_engine

    return make_engine(settings, on_state=on_state)


class TrayApp:
    """One running tray: Tk root, pystray icon, controller, overlay and the single-instance listener."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine_factory: EngineFactory | None = None,
        settings_file: SettingsFile | None = None,
        file_settings: Settings | None = None,
        problems: Sequence[str] = (),
        launch_flags: Sequence[str] = (),
        capture_at_start: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        import tkinter as tk

        import pystray

        from dotocr.capture import RegionSelector, enable_dpi_awareness
        from dotocr.desktop.notification import get_notifier
        from dotocr.tray.controller import Controller
        from dotocr.tray.engine_host import STARTING
        from dotocr.tray.history import History
        from dotocr.tray.icon import draw_icon
        from dotocr.tray.menu import build_menu
        from dotocr.tray.picture_sources import ask_image_file
        from dotocr.tray.result_window import ResultWindow
        from dotocr.tray.services import Services
        from dotocr.tray.status_words import tooltip
        from dotocr.tray.toast_visibility import ToastCheck

        enable_dpi_awareness()  # before any window or mss exists
        # Tk before the icon's thread starts, never after: Tk's start-up waits on the X server holding the GIL,
        # and pystray's X11 thread grabs the server while docking, so the two would deadlock (seen under Xvfb).
        self.root = tk.Tk(className="dotocr")
        self.root.withdraw()
        self.selector = RegionSelector(self.root)
        self._icon_lock = threading.Lock()
        self._shown: tuple[EngineState, str] | None = None
        self._problems = list(problems)
        self._capture_at_start = capture_at_start

        self.icon = pystray.Icon("dotocr", draw_icon(STARTING), tooltip(STARTING, settings.hotkey))
        hotkey, hotkey_unavailable = _hotkey_backend()
        notifier = get_notifier(self.icon)
        self.toast_check = ToastCheck(notifier)
        services = Services(
            clipboard=_clipboard_backend(),
            notifier=notifier,
            history=History(data_dir() / "history.json", settings.history_size),
            autostart=_autostart_backend(),
            hotkey=hotkey,
            hotkey_unavailable=hotkey_unavailable,
            select_region=self.selector.select,
            cancel_selection=self.selector.close,
            grab_region=lambda region: region.grab(),
            open_result_window=lambda reading, on_cancel: ResultWindow(self.root, reading, on_cancel),
            schedule=self.root.after,
            toasts_visible=self.toast_check,
            ask_image_file=lambda: ask_image_file(self.root),
            pointer=self.root.winfo_pointerxy,
        )
        self.controller = Controller(
            settings=settings,
            services=services,
            engine_factory=engine_factory or default_engine_factory,
            settings_file=settings_file,
            file_settings=file_settings,
            launch_flags=list(launch_flags),
            last_region_path=data_dir() / "last_region.json",
            overrides=overrides,
        )
        self.controller.on_change = self.refresh_icon
        self.controller.on_quit = self._shutdown
        show_tk_menu = None if self.icon.HAS_MENU else (lambda: self.controller.post(self.show_tk_menu))
        self.icon.menu = build_menu(self.controller, on_open_menu=show_tk_menu)
        self.instance: Any = None

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything and block in Tk's mainloop until Quit. Returns the exit code."""
        from dotocr.tray.single_instance import InstanceServer, send_to_running

        self.instance = InstanceServer()
        if not self.instance.start(lambda message: self.controller.post(self._on_message, message)):
            self.root.destroy()
            if self.instance.problem is not None:  # no address at all: say why instead of exiting silently
                log.error("%s", self.instance.problem)
                return 1
            # another tray won the race after our first check: hand it the capture and leave
            if send_to_running("capture"):
                return 0
            log.error("Another dotocr-tray holds %s but did not answer; quit it (or end its process) and start "
                      "again.", self.instance.folder / "instance.lock")
            return 1
        _start_icon(self.icon)
        self.toast_check.start()
        self.refresh_icon()
        self.controller.report_settings_problems(self._problems)
        history_warning = self.controller.services.history.warning
        if history_warning:
            self.controller.notify("History file problem", history_warning)
        self.controller.start()
        self.controller.register_hotkey()
        if self._capture_at_start:
            self.controller.post(self.controller.capture)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: self.controller.post(self.controller.quit))
        self.root.after(POLL_MS, self._tick)
        log.info("dotocr tray started; hotkey %s", self.controller.settings.hotkey)
        self.root.mainloop()
        return 0

    def _tick(self) -> None:
        self.controller.drain()
        if not self.controller.quitting:
            self.root.after(POLL_MS, self._tick)

    def _on_message(self, message: str) -> None:
        if message.strip().lower() == "capture":  # `dotocr-tray --capture`: Wayland's hotkey, so it acts as one
            self.controller.hotkey_pressed()
        else:
            log.warning("Ignoring unknown message %r from another dotocr-tray", message)

    def _shutdown(self) -> None:
        """Quit, after the controller unregistered the hotkey: icon first, then Tk."""
        if self.instance is not None:
            self.instance.stop()
        try:
            self.icon.stop()
        except Exception:
            log.exception("Stopping the tray icon failed")
        if self.selector.is_open:
            self.selector.close()
        self.root.destroy()

    # -- Tk-thread helpers -----------------------------------------------------------------------

    def show_tk_menu(self) -> Any:
        from dotocr.tray.menu import popup_tk_menu

        return popup_tk_menu(self.root, self.icon.menu, self.icon)

    def refresh_icon(self) -> None:
        """Redraw icon, tooltip and menu when the state changed; any thread (pystray marshals to its own)."""
        from dotocr.tray.icon import draw_icon
        from dotocr.tray.status_words import tooltip

        state = self.controller.state()
        title = tooltip(state, self.controller.settings.hotkey, problem=self.controller.hotkey_error)
        with self._icon_lock:
            if self._shown != (state, title):
                if self._shown is None or (self._shown[0].status, self._shown[0].progress) != (state.status,
                                                                                              state.progress):
                    self.icon.icon = draw_icon(state)
                self.icon.title = icon_title(self.icon, title)
                self._shown = (state, title)
            try:
                self.icon.update_menu()
            except Exception:
                log.debug("Menu update failed", exc_info=True)


def icon_title(icon: Any, text: str) -> str:
    """The tooltip as this backend can set it: pystray's X11 backend writes the window name as Latin-1 and
    raises on anything else (an ellipsis, a non-Latin path in an error), so there those become "?"."""
    if type(icon).__module__.endswith("_xorg"):
        return text.encode("latin-1", "replace").decode("latin-1")
    return text


def _hotkey_backend() -> tuple[Any | None, str]:
    from dotocr.desktop.hotkey import HotkeyError, get_hotkey_backend

    try:
        return get_hotkey_backend(), ""
    except HotkeyError as exc:
        return None, str(exc)


def _start_icon(icon: Any) -> None:
    """Run pystray beside Tk. pystray 0.19's X11 backend starts a second setup thread in run_detached()
    that never ends and keeps the process alive after Quit; there, run() on our own daemon thread does
    the same work without it."""
    if type(icon).__module__.endswith("_xorg"):
        logging.getLogger("pystray._base").addFilter(_DockFailureFilter())
        threading.Thread(target=icon.run, name="pystray", daemon=True).start()
    else:
        icon.run_detached()


class _DockFailureFilter(logging.Filter):
    """Without a system tray, pystray's X11 backend logs a traceback on every icon update; say it once."""

    def __init__(self) -> None:
        super().__init__()
        self._said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to dock icon":
            return True
        if self._said:
            return False
        self._said = True
        record.msg = ("No system tray found on this desktop, so the icon is hidden; the hotkey and "
                      "`dotocr-tray --capture` still work.")
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


class _NoClipboard:
    """Stands in when no clipboard tool exists: every copy fails with the sentence saying what to install."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def copy(self, text: str) -> bool:
        from dotocr.desktop.clipboard import ClipboardError

        raise ClipboardError(self.reason)


def _clipboard_backend() -> Any:
    from dotocr.desktop.clipboard import ClipboardError, get_clipboard

    try:
        return get_clipboard()
    except ClipboardError as exc:
        log.warning("%s", exc)
        return _NoClipboard(str(exc))


def _autostart_backend() -> Any | None:
    try:
        from dotocr.desktop.autostart import get_autostart

        return get_autostart()
    except Exception as exc:
        log.warning("Start at login is not available: %s", exc)
        return None


def _setup_logging(verbose: bool) -> None:
    """Log to stderr when there is one and to a small rotating file (the tray usually has no console)."""
    handlers: list[logging.Handler] = []
    if sys.stderr is not None:
        handlers.append(logging.StreamHandler())
    from dotocr.storage import private_log_handler

    with contextlib.suppress(OSError):  # the log holds toast bodies, i.e. OCR text: it and its rotation are 0600
        handlers.append(private_log_handler(data_dir() / "tray.log", max_bytes=1_000_000, backups=1))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


PATH_FLAGS = ("--model",)
"""Flags whose value may be a file-system path: made absolute for start at login, which runs elsewhere."""


def launch_flags_from(argv: Sequence[str]) -> list[str]:
    """The flags to repeat when starting at login: everything but the one-off --capture, with relative
    paths made absolute (at login the working folder is not the one the tray was started from)."""
    flags: list[str] = []
    expects_path = False
    for arg in argv:
        if arg == "--capture":
            continue
        if expects_path:
            flags.append(_absolute_if_path(arg))
        elif "=" in arg and arg.split("=", 1)[0] in PATH_FLAGS:
            name, value = arg.split("=", 1)
            flags.append(f"{name}={_absolute_if_path(value)}")
        else:
            flags.append(arg)
        expects_path = arg in PATH_FLAGS
    return flags


def _absolute_if_path(value: str) -> str:
    """A local folder or anything written like a path becomes absolute; a Hugging Face repo id
    ("rednote-hilab/dots.ocr") is left alone."""
    looks_like_path = value.startswith(("~", "./", "../", ".\\", "..\\")) or value in (".", "..")
    expanded = os.path.expanduser(value)
    if looks_like_path or os.path.isdir(expanded):
        return os.path.abspath(expanded)
    return value


GUI_MISSING = {
    "tkinter": "dotocr-tray needs Tk: install python3-tk (Debian/Ubuntu) or use a Python that includes Tk.",
    "pystray": "dotocr-tray needs pystray: install it with `pip install pystray`.",
}


def missing_gui_module() -> str | None:
    """The sentence for the first GUI library this Python lacks, or None (checked before any window opens)."""
    import importlib
    import importlib.util

    for name, sentence in GUI_MISSING.items():
        try:
            if name == "tkinter":
                importlib.import_module(name)  # the module may exist while _tkinter (the Tk binding) does not
            elif importlib.util.find_spec(name) is None:  # importing pystray would connect to the display
                return sentence
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules (None)
            return sentence
    return None


def run(settings: Settings, **options: Any) -> int:
    """Run the tray in this process until Quit; `options` are `TrayApp`'s (tests pass an engine factory)."""
    return TrayApp(settings, **options).run()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.hotkey is not None:
        from dotocr.desktop.hotkey import parse_hotkey

        try:
            parse_hotkey(args.hotkey)
        except ValueError as exc:
            parser.error(str(exc))
    _setup_logging(args.verbose)

    from dotocr.tray.single_instance import send_to_running

    if send_to_running("capture"):
        log.info("dotocr-tray is already running; asked it to capture a region")
        return 0
    missing = missing_gui_module()
    if missing is not None:
        print(missing, file=sys.stderr)
        return 1

    settings_file = SettingsFile()
    file_settings = settings_file.load()
    overrides = overrides_from_args(args, settings_file.problems)
    from dotocr.tray.choices import model_card_defaults

    overrides.update(model_card_defaults(file_settings.replace(**overrides), setting_sources(args, settings_file)))
    settings = file_settings.replace(**overrides)
    try:
        return run(settings, settings_file=settings_file, file_settings=file_settings,
                   problems=settings_file.problems, launch_flags=launch_flags_from(arguments),
                   capture_at_start=args.capture, overrides=overrides)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # no display at all: one sentence, not a traceback
        if _is_display_error(exc):
            print(f"dotocr-tray: cannot open a window ({exc}); run it inside a desktop session.",
                  file=sys.stderr)
            return 1
        raise


def _is_display_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "TclError" or "display" in str(exc).lower()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
