"""Clipboard for real: our X11 selection owner (and pyperclip's xclip behind it) on a private Xvfb, read back by
other processes with `xclip -o`; the Windows backend's CF_HTML built here (no Windows on this machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from dotocr.desktop.clipboard import ClipboardContent, ClipboardError, get_clipboard
from dotocr.desktop.clipboard.pyperclip_backend import PyperclipClipboard
from dotocr.desktop.clipboard.windows import cf_html
from dotocr.desktop.clipboard.x11_selection import X11SelectionClipboard
from dotocr.errors import DotOCRError
from tests.cli_helpers import REPO
from tests.xvfb import needs_xvfb, xvfb_fixture

x11 = [pytest.mark.x11, needs_xvfb, pytest.mark.skipif(shutil.which("xclip") is None, reason="xclip is not installed")]
pytestmark = [pytest.mark.timeout(60)]

xvfb = xvfb_fixture(320, 240)
XCLIP = shutil.which("xclip") or "xclip"
TABLE = "<table><tr><th>Item</th><th>Qty</th></tr><tr><td>Äpfel</td><td>3</td></tr></table>"


def xclip_out(target: str | None = None) -> str:
    command = [XCLIP, "-selection", "clipboard", "-o"] + (["-t", target] if target else [])
    done = subprocess.run(command, capture_output=True, timeout=10)
    return done.stdout.decode("utf-8")


def xclip_in(text: str) -> None:
    subprocess.run([XCLIP, "-selection", "clipboard"], input=text.encode("utf-8"), timeout=10, check=True)
    deadline = time.monotonic() + 5
    while xclip_out() != text and time.monotonic() < deadline:
        time.sleep(0.01)


def owners() -> list[psutil.Process]:
    """Our owner processes serving this test's display."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "dotocr.desktop.clipboard.x11_owner" in " ".join(process.info["cmdline"] or []) and \
                    process.environ().get("DISPLAY") == os.environ.get("DISPLAY"):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.usefixtures("xvfb")
class TestX11:
    pytestmark = x11

    def test_text_lands_and_outlives_the_process_that_copied_it(self):
        clipboard = get_clipboard()
        assert clipboard.name.startswith("X11 selection (text and HTML)") and clipboard.carries_html
        code = ("from dotocr.desktop.clipboard import get_clipboard;"
                "assert get_clipboard().copy('Invoice 4711\\nTotal: 99.50 EUR')")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=REPO)
        assert xclip_out() == "Invoice 4711\nTotal: 99.50 EUR"  # the copying process is gone; our owner serves

    def test_a_table_is_offered_as_html_and_text_at_once(self):
        assert get_clipboard().copy(ClipboardContent("Item\tQty\nÄpfel\t3", TABLE))
        targets = xclip_out("TARGETS").split()
        assert {"TARGETS", "TIMESTAMP", "text/html", "UTF8_STRING", "text/plain;charset=utf-8", "STRING"} <= set(
            targets)
        assert xclip_out() == xclip_out("UTF8_STRING") == "Item\tQty\nÄpfel\t3"
        assert xclip_out("text/plain;charset=utf-8") == "Item\tQty\nÄpfel\t3"
        html = xclip_out("text/html")
        assert html.startswith('<html><head><meta charset="utf-8"></head><body>') and TABLE in html
        latin1 = subprocess.run([XCLIP, "-selection", "clipboard", "-o", "-t", "STRING"], capture_output=True,
                                timeout=10).stdout
        assert latin1 == "Item\tQty\nÄpfel\t3".encode("latin-1")

    def test_plain_text_offers_no_html(self):
        assert get_clipboard().copy("only text")
        assert "text/html" not in xclip_out("TARGETS").split()

    @pytest.mark.parametrize("blank", ["", "   ", "\n\t \n"])
    def test_blank_text_never_wipes_the_clipboard(self, blank):
        xclip_in("what the user had")
        clipboard = get_clipboard()
        assert clipboard.copy(blank) is False
        assert clipboard.copy(ClipboardContent(blank, TABLE)) is False
        assert xclip_out() == "what the user had"

    def test_unicode_round_trip(self):
        text = "Grüße – 東京 – مرحبا – 🎉👨‍👩‍👧 – ∑x²"
        clipboard = get_clipboard()
        assert clipboard.copy(ClipboardContent(text, f"<p>{text}</p>"))
        assert xclip_out() == text
        assert clipboard.paste() == text
        assert f"<p>{text}</p>" in xclip_out("text/html")

    def test_more_than_one_x_request_goes_in_incr_chunks(self):
        text = ("0123456789 " * 9 + "\n") * 12_000  # 1.2 MB: far over one X request
        assert get_clipboard().copy(ClipboardContent(text, "<pre>" + text + "</pre>"))
        assert xclip_out() == text
        assert len(xclip_out("text/html")) > len(text)

    def test_the_owner_serves_until_another_program_takes_the_clipboard(self):
        assert get_clipboard().copy("first")
        assert get_clipboard().copy("second")  # the first owner sees the clipboard taken and leaves
        deadline = time.monotonic() + 5
        while len(owners()) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(owners()) == 1 and xclip_out() == "second"
        xclip_in("from elsewhere")
        while owners() and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert owners() == [] and xclip_out() == "from elsewhere"

    def test_the_owner_needs_no_xclip(self, tmp_path, monkeypatch):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        monkeypatch.setenv("PATH", str(bin_dir))
        clipboard = get_clipboard()
        assert clipboard.copy(ClipboardContent("no xclip here", TABLE))
        assert xclip_out() == "no xclip here"  # read with xclip's full path, by another process
        assert X11SelectionClipboard().paste() == "no xclip here"

    def test_paste_reads_what_another_program_copied(self):
        xclip_in("from elsewhere")
        assert get_clipboard().paste() == "from elsewhere"

    def test_without_python_xlib_the_text_still_lands_through_xclip(self, monkeypatch):
        monkeypatch.setattr(X11SelectionClipboard, "is_installed", staticmethod(lambda: False))
        clipboard = get_clipboard()
        assert clipboard.name == "pyperclip (text only)" and not clipboard.carries_html
        assert clipboard.copy(ClipboardContent("Item\tQty", TABLE))
        assert xclip_out() == "Item\tQty"
        assert "text/html" not in xclip_out("TARGETS").split()

    def test_a_handler_failing_at_call_time_falls_through_to_the_next(self, monkeypatch, caplog):
        def broken(self, content):
            raise ClipboardError("The X11 clipboard could not be taken (test).")

        monkeypatch.setattr(X11SelectionClipboard, "copy", broken)
        assert get_clipboard().copy(ClipboardContent("fell through", TABLE))
        assert xclip_out() == "fell through"
        assert "could not be taken (test)" in caplog.text

    def test_missing_tools_name_what_to_install(self, tmp_path, monkeypatch):
        bin_dir = tmp_path / "bin"  # a PATH with `which` but no clipboard tool, and no python-xlib
        bin_dir.mkdir()
        os.symlink(shutil.which("which"), bin_dir / "which")
        monkeypatch.setenv("PATH", str(bin_dir))
        monkeypatch.setattr(X11SelectionClipboard, "is_installed", staticmethod(lambda: False))
        with pytest.raises(ClipboardError) as caught:
            get_clipboard()
        message = str(caught.value)
        assert "xclip" in message and "install" in message and "\n" not in message
        assert isinstance(caught.value, DotOCRError)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: the Win32 clipboard needs no X display")
def test_no_display_is_reported_not_crashed(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not X11SelectionClipboard.is_compatible()
    with pytest.raises(ClipboardError, match="xclip"):
        get_clipboard()


def test_pyperclip_is_the_last_handler_and_carries_no_html():
    assert not PyperclipClipboard.carries_html and PyperclipClipboard.is_compatible()


@pytest.mark.parametrize("fragment", ["<table><tr><td>a</td></tr></table>", "<p>Grüße 東京 🎉</p>", ""])
def test_cf_html_offsets_point_at_the_document_and_the_fragment(fragment):
    """CF_HTML's header counts UTF-8 bytes (learn.microsoft.com, "HTML Clipboard Format"); Word and Excel cut
    the fragment by these numbers, so each must land exactly."""
    data = cf_html(fragment)
    header = dict(line.split(":", 1) for line in data.split(b"<html>")[0].decode("ascii").split("\r\n") if line)
    assert header["Version"] == "0.9"
    offsets = {name: int(header[name]) for name in ("StartHTML", "EndHTML", "StartFragment", "EndFragment")}
    assert all(len(header[name]) == 10 for name in offsets)
    assert data[offsets["StartHTML"]:].startswith(b"<html>") and offsets["EndHTML"] == len(data)
    assert data[offsets["StartFragment"]:offsets["EndFragment"]] == fragment.encode("utf-8")
    assert data[:offsets["StartFragment"]].endswith(b"<!--StartFragment-->")
    assert data[offsets["EndFragment"]:].startswith(b"<!--EndFragment-->")
    assert b'<meta charset="utf-8">' in data[offsets["StartHTML"]:offsets["StartFragment"]]


class FakeWin32:
    """user32 and kernel32 as far as the Windows backend calls them, for running its logic off Windows: memory is
    real (GlobalLock hands out a ctypes buffer the backend copies into), the clipboard a dict."""

    CF_HTML = 49_300

    def __init__(self, *, busy_opens: int = 0, refuse: int | None = None) -> None:
        import ctypes

        self.ctypes = ctypes
        self.calls: list[str] = []
        self.buffers: dict[int, object] = {}
        self.clipboard: dict[int, bytes] = {}
        self.busy_opens, self.refuse = busy_opens, refuse

    def __call__(self, name: str, use_last_error: bool = False) -> FakeWin32:
        return self

    def __getattr__(self, name: str):
        if name.startswith(("do_", "_")):
            raise AttributeError(name)

        def call(*args):
            self.calls.append(name)
            return getattr(self, "do_" + name, lambda *_a: 1)(*args)

        call.argtypes = call.restype = None
        setattr(self, name, call)
        return call

    def do_CreateWindowExW(self, *args):
        return 7

    def do_OpenClipboard(self, window):
        assert window == 7  # our own message-only window, never NULL
        self.busy_opens -= 1
        return self.busy_opens < 0

    def do_RegisterClipboardFormatW(self, name):
        assert name == "HTML Format"
        return self.CF_HTML

    def do_GlobalAlloc(self, flags, size):
        buffer = self.ctypes.create_string_buffer(size)
        self.buffers[self.ctypes.addressof(buffer)] = buffer
        return self.ctypes.addressof(buffer)

    def do_GlobalLock(self, handle):
        return handle

    def do_SetClipboardData(self, kind, handle):
        if kind == self.refuse:
            return 0
        self.clipboard[kind] = self.buffers[handle].raw
        return handle


def test_the_windows_backend_sets_unicode_text_and_cf_html_and_always_closes(monkeypatch):
    import ctypes

    from dotocr.desktop.clipboard.windows import CF_UNICODETEXT, WindowsClipboard

    fake = FakeWin32(busy_opens=2)  # another program holds the clipboard for two tries
    monkeypatch.setattr(ctypes, "WinDLL", fake, raising=False)
    WindowsClipboard().copy(ClipboardContent("Item\tQty\nÄpfel 東京\t3", TABLE))
    assert fake.clipboard[CF_UNICODETEXT] == "Item\tQty\nÄpfel 東京\t3".encode("utf-16-le") + b"\0\0"
    assert fake.clipboard[FakeWin32.CF_HTML] == cf_html(TABLE) + b"\0"
    assert fake.calls.count("OpenClipboard") == 3 and fake.calls.index("EmptyClipboard") < fake.calls.index(
        "SetClipboardData")
    assert fake.calls[-2:] == ["CloseClipboard", "DestroyWindow"]

    refused = FakeWin32(refuse=FakeWin32.CF_HTML)
    monkeypatch.setattr(ctypes, "WinDLL", refused, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: 1418, raising=False)  # Windows only, like WinDLL
    with pytest.raises(ClipboardError, match="refused the clipboard data .error 1418"):
        WindowsClipboard().copy(ClipboardContent("text", TABLE))
    assert "GlobalFree" in refused.calls and refused.calls[-2:] == ["CloseClipboard", "DestroyWindow"]
