"""Notification text shaping, backend choice, and the limits applied at the Windows balloon boundary."""

from __future__ import annotations

import logging
import os
import stat
import sys
import time

import pytest

from dotocr.desktop.notification import (
    WINDOWS_TEXT_MAX,
    WINDOWS_TITLE_MAX,
    fit_notification,
    get_notifier,
)
from dotocr.desktop.notification.logging_backend import LoggingNotifier
from dotocr.desktop.notification.notify_send import NotifySendNotifier, notify_send_command
from dotocr.desktop.notification.pystray_backend import PystrayNotifier
from dotocr.desktop.notification.text import ELLIPSIS, truncate, utf16_len
from dotocr.tray.messages import summarize_result

pytestmark = pytest.mark.timeout(30)


# --- fit_notification ------------------------------------------------------------------------------

def test_short_texts_are_untouched():
    fitted = fit_notification("Title", "Body\nline two", title_max=63, text_max=255)
    assert fitted == ("Title", "Body\nline two")


def test_cut_at_a_word_boundary_with_an_ellipsis():
    title, text = fit_notification("Copied 12 characters", "alpha beta gamma delta epsilon", title_max=63,
                                   text_max=20)
    assert title == "Copied 12 characters"
    assert text == "alpha beta gamma" + ELLIPSIS and utf16_len(text) <= 20


def test_a_long_word_is_cut_inside_rather_than_losing_everything():
    text = "see https://example.com/" + "x" * 300
    cut = truncate(text, 40)
    assert utf16_len(cut) == 40 and cut.startswith("see https://example.com/xxx") and cut.endswith(ELLIPSIS)


def test_multi_line_text_is_measured_whole():
    text = "\n".join(f"line {n} with some words" for n in range(40))
    cut = truncate(text, 100)
    assert utf16_len(cut) <= 100 and cut.endswith(ELLIPSIS)
    assert cut.startswith("line 0 with some words\nline 1")
    assert not cut[:-1].endswith((" ", "\n"))


def test_emoji_count_as_two_utf16_units_and_are_never_split():
    cut = truncate("🎉" * 100, WINDOWS_TITLE_MAX)
    assert utf16_len(cut) <= WINDOWS_TITLE_MAX and cut == "🎉" * 31 + ELLIPSIS
    cut.encode("utf-16-le").decode("utf-16-le")  # no lone surrogate


def test_combining_marks_stay_with_their_letter():
    text = "e\u0301" * 30  # é as e + combining acute
    cut = truncate(text, 10)
    assert cut[:-1] == "e\u0301" * 4 and cut.endswith(ELLIPSIS)


def test_zwj_sequence_does_not_end_in_a_dangling_joiner():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    cut = truncate("ab " + family * 5, 8)
    assert "\u200d" + ELLIPSIS not in cut and utf16_len(cut) <= 8


@pytest.mark.parametrize("limit", [1, 2, 5, 63, 255])
def test_limits_hold_for_any_input(limit):
    for text in ["word " * 100, "x" * 500, "🎉 a" * 200, "東京" * 300, ""]:
        assert utf16_len(truncate(text, limit)) <= limit


# --- summarize_result ------------------------------------------------------------------------------

def test_summary_counts_characters_and_time():
    title, body = summarize_result("Hello world", 0.84)
    assert title == "Copied 11 characters \u00b7 0.8 s" and body == "Hello world"


def test_summary_of_a_long_result_shows_the_first_200_characters():
    text = "lorem ipsum " * 400
    title, body = summarize_result(text, 12.6)
    assert title == "Copied 4,800 characters \u00b7 13 s"
    assert body.startswith("lorem ipsum lorem") and body.endswith(ELLIPSIS) and len(body) <= 200


def test_summary_collapses_blank_lines_and_spaces():
    assert summarize_result("a   b\n\n\n\n  c  ", 1)[1] == "a b\n\nc"


def test_summary_of_nothing_says_the_clipboard_is_unchanged():
    title, body = summarize_result(" \n ", 2.0)
    assert title.startswith("Nothing recognised") and "2.0 s" in title and "unchanged" in body


def test_summary_singular():
    assert summarize_result("x", 0.5)[0].startswith("Copied 1 character \u00b7")


# --- backends ------------------------------------------------------------------------------------

class FakeWindowsIcon:
    """Stands in for pystray's win32 Icon: a real balloon needs Windows. Like the real NOTIFYICONDATAW
    buffers it refuses texts that do not fit (64 and 256 UTF-16 units, including the NUL)."""

    HAS_NOTIFICATION = True

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def notify(self, message: str, title: str | None = None) -> None:
        if utf16_len(title or "") > 63 or utf16_len(message) > 255:
            raise ValueError("string too long")
        self.shown.append((title or "", message))


def test_pystray_backend_applies_the_windows_limits():
    icon = FakeWindowsIcon()
    notifier = get_notifier(icon)
    assert isinstance(notifier, PystrayNotifier)
    notifier.notify("Copied 4,800 characters \u00b7 13 s " + "🎉" * 40, "word " * 200)
    (title, message), = icon.shown
    assert utf16_len(title) <= WINDOWS_TITLE_MAX and utf16_len(message) <= WINDOWS_TEXT_MAX
    assert title.startswith("Copied 4,800 characters") and message.endswith(ELLIPSIS)


def test_pystray_backend_never_raises():
    class BrokenIcon(FakeWindowsIcon):
        def notify(self, message, title=None):
            raise OSError("Shell_NotifyIcon failed")

    PystrayNotifier(BrokenIcon()).notify("t", "m")


def test_icon_without_notifications_is_skipped(monkeypatch, tmp_path):
    class XorgIcon:
        HAS_NOTIFICATION = False  # as pystray's xorg backend

    monkeypatch.setenv("PATH", str(tmp_path))  # no notify-send
    assert isinstance(get_notifier(XorgIcon()), LoggingNotifier)
    assert isinstance(get_notifier(None), LoggingNotifier)


def test_logging_fallback_keeps_the_message(caplog):
    with caplog.at_level(logging.INFO, logger="dotocr.notification"):
        LoggingNotifier().notify("Copied 3 characters", "abc")
    assert "Copied 3 characters: abc" in caplog.text


def test_notify_send_command_escapes_markup_and_ends_options():
    argv = notify_send_command("-Copied", "a < b & c", "notify-send")
    assert argv[0] == "notify-send" and "--app-name=dotocr" in argv
    assert argv[-3:] == ["--", "-Copied", "a &lt; b &amp; c"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="notify-send is the Linux backend")
def test_notify_send_backend_runs_the_command_and_never_blocks(monkeypatch, tmp_path):
    # No session bus or notification daemon exists here, so `notify-send` is a stand-in script that records
    # its arguments and then hangs, as the real one can when no daemon answers.
    record = tmp_path / "argv.txt"
    script = tmp_path / "notify-send"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\nsleep 10\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    notifier = get_notifier(None)
    assert isinstance(notifier, NotifySendNotifier)
    started = time.monotonic()
    notifier.notify("Copied 5 characters \u00b7 0.4 s", "hello")
    assert time.monotonic() - started < 0.5
    deadline = time.monotonic() + 5
    while not (record.exists() and record.read_text().count("\n") >= 5) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.read_text().splitlines()[-3:] == ["--", "Copied 5 characters \u00b7 0.4 s", "hello"]
