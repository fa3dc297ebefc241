"""Clipboard for real: pyperclip drives xclip on a private Xvfb, read back with `xclip -o`."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from dotocr.desktop.clipboard import ClipboardError, get_clipboard
from dotocr.errors import DotOCRError
from tests.xvfb import needs_xvfb, xvfb_fixture

pytestmark = [pytest.mark.timeout(60), pytest.mark.x11, needs_xvfb,
              pytest.mark.skipif(shutil.which("xclip") is None, reason="xclip is not installed")]

xvfb = xvfb_fixture(320, 240)


def xclip_out() -> str:
    done = subprocess.run(["xclip", "-selection", "clipboard", "-o"], capture_output=True, timeout=10)
    return done.stdout.decode("utf-8")


def xclip_in(text: str) -> None:
    subprocess.run(["xclip", "-selection", "clipboard"], input=text.encode("utf-8"), timeout=10, check=True)


def test_copy_lands_on_the_clipboard_and_outlives_the_call(xvfb):
    clipboard = get_clipboard()
    assert "xclip" in clipboard.name
    assert clipboard.copy("Invoice 4711\nTotal: 99.50 EUR") is True
    assert xclip_out() == "Invoice 4711\nTotal: 99.50 EUR"  # another process reads it: xclip stayed as owner


@pytest.mark.parametrize("blank", ["", "   ", "\n\t \n"])
def test_blank_text_never_wipes_the_clipboard(xvfb, blank):
    xclip_in("what the user had")
    assert get_clipboard().copy(blank) is False
    assert xclip_out() == "what the user had"


def test_unicode_round_trip(xvfb):
    text = "Grüße – 東京 – مرحبا – 🎉👨‍👩‍👧 – ∑x²"
    clipboard = get_clipboard()
    assert clipboard.copy(text)
    assert xclip_out() == text
    assert clipboard.paste() == text


def test_paste_reads_what_another_program_copied(xvfb):
    xclip_in("from elsewhere")
    assert get_clipboard().paste() == "from elsewhere"


def test_missing_xclip_names_what_to_install(xvfb, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # a PATH with `which` but no clipboard tool
    bin_dir.mkdir()
    os.symlink(shutil.which("which"), bin_dir / "which")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ClipboardError) as caught:
        get_clipboard()
    message = str(caught.value)
    assert "xclip" in message and "install" in message and "\n" not in message
    assert isinstance(caught.value, DotOCRError)


def test_no_display_is_reported_not_crashed(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ClipboardError, match="xclip"):
        get_clipboard()
