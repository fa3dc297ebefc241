"""Global hotkey: the parser, the Windows backend against a faked Win32 boundary, and X11 for real."""

from __future__ import annotations

import ctypes
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dotocr.desktop.hotkey import HotkeyError, X11Hotkeys, get_hotkey_backend, parse_hotkey
from dotocr.desktop.hotkey import windows as win
from dotocr.errors import DotOCRError
from tests.xvfb import needs_xdotool, needs_xvfb, xdotool, xvfb_fixture

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(60)


# --- parsing --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "canonical"), [
    ("ctrl+alt+shift+o", "ctrl+alt+shift+o"),
    (" Shift + CTRL +Alt+ O ", "ctrl+alt+shift+o"),
    ("control+option+space", "ctrl+alt+space"),
    ("super+Print", "win+print_screen"),
    ("ctrl+PgUp", "ctrl+page_up"),
    ("F9", "f9"),
    ("shift+f24", "shift+f24"),
    ("win+7", "win+7"),
])
def test_parse_accepts_and_normalises(text, canonical):
    assert str(parse_hotkey(text)) == canonical


def test_parse_order_does_not_matter():
    assert parse_hotkey(["o", "ctrl"][1] + "+o") == parse_hotkey("CTRL+O")


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty"),
    ("ctrl++o", "empty part"),
    ("hyper+o", "'hyper'"),
    ("ctrl+ctrl+o", "twice"),
    ("ctrl+alt", "ends in a modifier"),
    ("ctrl+é", "not a key we know"),
    ("ctrl+f25", "not a key we know"),
    ("o", "while you type"),
    ("shift+o", "while you type"),
])
def test_parse_rejects_with_one_clear_sentence(text, fragment):
    with pytest.raises(ValueError) as caught:
        parse_hotkey(text)
    message = str(caught.value)
    assert fragment in message and "ctrl+alt+shift+o" in message and "\n" not in message


def test_hotkey_error_is_a_dotocr_error():
    assert issubclass(HotkeyError, DotOCRError)


# --- Windows: RegisterHotKey on its own thread. Win32 does not exist here, so user32/kernel32 are faked
# --- at the ctypes boundary; everything above it (thread, loop, errors) is the real backend code. ---

class FakeUser32:
    """Models the parts of user32 we call: a per-thread message queue and hotkey ownership."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.fail_with = fail_with
        self.queues: dict[int, queue.Queue] = {}
        self.registered: list[tuple[int, object, int, int, int]] = []  # (thread, hwnd, id, mods, vk)
        self.unregistered: list[tuple[int, int]] = []
        self.posted: list[tuple[int, int]] = []

    def _queue(self) -> queue.Queue:
        return self.queues.setdefault(threading.get_ident(), queue.Queue())

    def PeekMessageW(self, msg, hwnd, low, high, remove):  # noqa: N802 - Win32 names
        self._queue()
        return 0

    def RegisterHotKey(self, hwnd, ident, mods, vk):  # noqa: N802
        if self.fail_with is not None:
            return 0
        self.registered.append((threading.get_ident(), hwnd, ident, mods, vk))
        return 1

    def UnregisterHotKey(self, hwnd, ident):  # noqa: N802
        self.unregistered.append((threading.get_ident(), ident))
        return 1

    def GetMessageW(self, msg_ref, hwnd, low, high):  # noqa: N802
        message, wparam = self._queue().get(timeout=10)
        msg = msg_ref._obj
        msg.message, msg.wParam = message, wparam
        return 0 if message == win.WM_QUIT else 1

    def PostThreadMessageW(self, thread_id, message, wparam, lparam):  # noqa: N802
        self.posted.append((thread_id, message))
        if thread_id not in self.queues:
            return 0
        self.queues[thread_id].put((message, wparam))
        return 1

    def press(self) -> None:
        """What Windows does when the registered combination is pressed."""
        thread_id = self.registered[-1][0]
        self.queues[thread_id].put((win.WM_HOTKEY, win.HOTKEY_ID))


class FakeKernel32:
    def GetCurrentThreadId(self) -> int:  # noqa: N802
        return threading.get_ident()


def _windows_backend(user32: FakeUser32) -> win.WindowsHotkeys:
    return win.WindowsHotkeys(user32=user32, kernel32=FakeKernel32(),
                              last_error=lambda: user32.fail_with or 0)


def test_windows_registers_with_norepeat_on_its_own_thread_and_delivers_presses():
    user32 = FakeUser32()
    backend = _windows_backend(user32)
    fired: queue.Queue[int] = queue.Queue()
    backend.register(parse_hotkey("ctrl+alt+shift+o"), lambda: fired.put(threading.get_ident()))
    thread_id, hwnd, ident, mods, vk = user32.registered[0]
    assert thread_id != threading.get_ident() and hwnd is None
    assert mods == win.MOD_CONTROL | win.MOD_ALT | win.MOD_SHIFT | win.MOD_NOREPEAT
    assert vk == ord("O")
    user32.press()
    user32.press()
    assert fired.get(timeout=5) == thread_id and fired.get(timeout=5) == thread_id
    backend.unregister()
    assert user32.posted == [(thread_id, win.WM_QUIT)]
    assert user32.unregistered == [(thread_id, ident)]  # UnregisterHotKey ran on the registering thread


def test_windows_conflict_names_the_combination():
    user32 = FakeUser32(fail_with=win.ERROR_HOTKEY_ALREADY_REGISTERED)
    with pytest.raises(HotkeyError) as caught:
        _windows_backend(user32).register(parse_hotkey("ctrl+alt+shift+o"), lambda: None)
    message = str(caught.value)
    assert "ctrl+alt+shift+o" in message and "another program" in message and "--hotkey" in message


def test_windows_other_failures_report_the_error_code():
    with pytest.raises(HotkeyError, match="error 5"):
        _windows_backend(FakeUser32(fail_with=5)).register(parse_hotkey("win+f1"), lambda: None)


def test_windows_a_raising_callback_does_not_end_the_message_loop():
    user32 = FakeUser32()
    backend = _windows_backend(user32)
    calls: list[int] = []

    def callback() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in the app")

    backend.register(parse_hotkey("ctrl+shift+f5"), callback)
    user32.press()
    user32.press()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 2
    backend.unregister()


def test_windows_reregistering_replaces_the_old_hotkey():
    user32 = FakeUser32()
    backend = _windows_backend(user32)
    backend.register(parse_hotkey("ctrl+alt+o"), lambda: None)
    backend.register(parse_hotkey("ctrl+alt+p"), lambda: None)
    assert len(user32.unregistered) == 1 and user32.registered[-1][4] == ord("P")
    backend.unregister()


@pytest.mark.parametrize(("text", "vk"), [("ctrl+f1", 0x70), ("f24", 0x87), ("ctrl+space", 0x20),
                                          ("win+print_screen", 0x2C), ("alt+9", 0x39)])
def test_windows_virtual_key_codes(text, vk):
    assert win.virtual_key(parse_hotkey(text))[1] == vk


def test_windows_msg_struct_matches_what_the_loop_reads():
    from ctypes import wintypes

    msg = wintypes.MSG()
    ctypes.byref(msg)._obj.message = win.WM_HOTKEY
    assert msg.message == win.WM_HOTKEY


# --- X11, for real under Xvfb ------------------------------------------------------------------------

xvfb = xvfb_fixture(640, 480)


def _wait_for(events: queue.Queue, timeout: float = 5.0):
    return events.get(timeout=timeout)


@needs_xvfb
@needs_xdotool
@pytest.mark.x11
def test_x11_hotkey_fires_and_stops_after_unregister(xvfb):
    backend = get_hotkey_backend()
    assert isinstance(backend, X11Hotkeys)
    events: queue.Queue[float] = queue.Queue()
    backend.register(parse_hotkey("ctrl+alt+shift+o"), lambda: events.put(time.monotonic()))
    try:
        pressed = time.monotonic()
        xdotool("key", "ctrl+alt+shift+o")
        assert _wait_for(events) - pressed < 2.0
        xdotool("key", "ctrl+alt+o")  # not the combination
        time.sleep(0.3)
        assert events.empty()
    finally:
        backend.unregister()
    xdotool("key", "ctrl+alt+shift+o")
    time.sleep(0.5)
    assert events.empty()


@needs_xvfb
@needs_xdotool
@pytest.mark.x11
def test_x11_a_raising_callback_keeps_the_listener_alive(xvfb):
    backend = get_hotkey_backend()
    events: queue.Queue[int] = queue.Queue()

    def callback() -> None:
        events.put(1)
        raise RuntimeError("bug in the app")

    backend.register(parse_hotkey("win+print_screen"), callback)
    try:
        xdotool("key", "super+Print")
        _wait_for(events)
        xdotool("key", "super+Print")
        _wait_for(events)
    finally:
        backend.unregister()


@needs_xvfb
@pytest.mark.x11
def test_x11_combination_grabbed_by_another_client_is_reported(xvfb):
    from Xlib import XK, X, display

    other = display.Display()  # another X client, e.g. the desktop's shortcut daemon
    root = other.screen().root
    keycode = other.keysym_to_keycode(XK.string_to_keysym("o"))
    mask = X.ControlMask | X.Mod1Mask | X.ShiftMask
    root.grab_key(keycode, mask, False, X.GrabModeAsync, X.GrabModeAsync)
    other.sync()
    try:
        with pytest.raises(HotkeyError) as caught:
            get_hotkey_backend().register(parse_hotkey("ctrl+alt+shift+o"), lambda: None)
        assert "ctrl+alt+shift+o" in str(caught.value) and "another program" in str(caught.value)
        backend = get_hotkey_backend()
        backend.register(parse_hotkey("ctrl+alt+shift+p"), lambda: None)  # a free one still works
        backend.unregister()
    finally:
        root.ungrab_key(keycode, mask)
        other.close()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: RegisterHotKey needs no DISPLAY, so Windows "
                    "always has a backend (the next test)")
def test_no_backend_without_a_display_says_what_to_do(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(HotkeyError, match="dotocr-tray --capture"):
        get_hotkey_backend()


@pytest.mark.skipif(sys.platform != "win32", reason="RegisterHotKey exists on Windows only")
def test_windows_has_its_hotkey_backend_without_a_display(monkeypatch):
    from dotocr.desktop.hotkey.windows import WindowsHotkeys

    monkeypatch.delenv("DISPLAY", raising=False)
    assert isinstance(get_hotkey_backend(), WindowsHotkeys)


def test_wayland_session_is_not_treated_as_x11(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert X11Hotkeys.is_compatible() is False


def test_importing_needs_no_display_and_loads_no_platform_library():
    # dotocr.engine's package init loads torch (slow); this only checks our modules, so it loads
    # dotocr.errors without that init.
    code = (
        "import sys, types; before = set(sys.modules); import dotocr; "
        "engine = types.ModuleType('dotocr.engine'); "
        "engine.__path__ = [dotocr.__path__[0] + '/engine']; sys.modules['dotocr.engine'] = engine; "
        "import dotocr.desktop.hotkey, dotocr.desktop.clipboard, dotocr.desktop.notification; "
        "import dotocr.desktop.autostart; "
        "import dotocr.tray.single_instance, dotocr.tray.history; "
        "print(sorted(m for m in ('pynput', 'pystray', 'Xlib', 'pyperclip', 'winreg', 'torch') "
        "if m in sys.modules and m not in before))"  # Windows CPython loads winreg at start-up, before us
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           **{name: os.environ[name] for name in ("SYSTEMROOT",) if name in os.environ}}  # Windows needs it
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@needs_xvfb
@pytest.mark.x11
def test_unregister_ends_the_listener_thread_at_once(xvfb):
    backend = get_hotkey_backend()
    before = threading.active_count()
    backend.register(parse_hotkey("ctrl+alt+shift+u"), lambda: None)
    assert threading.active_count() > before
    started = time.monotonic()
    backend.unregister()
    assert time.monotonic() - started < 1.0
    assert threading.active_count() == before
