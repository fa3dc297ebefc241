"""Monitors and screenshots against a real X server (Xvfb) showing a known image."""

from __future__ import annotations

import os
import tkinter as tk

import pytest

from dotocr.capture.screens import CaptureError, Monitor, grab_all, grab_rect, list_monitors
from tests.capture_helpers import ImageWindow, pattern_image, same_pixels
from tests.xvfb import XvfbServer, needs_xvfb, shared_xvfb, using_display

pytestmark = [needs_xvfb, pytest.mark.x11, pytest.mark.timeout(60)]

SINGLE = (1280, 720)
DUAL = [(0, 0, 1024, 768), (1024, 0, 800, 600)]


@pytest.fixture(scope="module")
def single_screen():
    """Xvfb with one monitor and a pattern window at 40,30; yields the pattern."""
    with using_display(shared_xvfb(*SINGLE)):
        root = tk.Tk()
        root.withdraw()
        pattern = pattern_image(600, 400)
        ImageWindow(root, pattern, 40, 30)
        yield pattern
        root.destroy()


@pytest.fixture(scope="module")
def dual_screen():
    """Xvfb split into two RandR monitors; a pattern window straddles nothing, it sits on monitor 1."""
    with using_display(shared_xvfb(monitors=DUAL)):
        root = tk.Tk()
        root.withdraw()
        pattern = pattern_image(300, 200)
        ImageWindow(root, pattern, 1024 + 50, 60)
        yield pattern
        root.destroy()


def test_single_monitor_is_listed_with_its_size(single_screen):
    assert list_monitors() == [Monitor(0, 0, 0, *SINGLE)]


def test_grab_all_returns_rgb_pixels_of_the_screen(single_screen):
    shots = grab_all()
    assert len(shots) == 1
    monitor, image = shots[0]
    assert image.mode == "RGB" and image.size == SINGLE
    assert same_pixels(image.crop((40, 30, 640, 430)), single_screen)
    assert image.getpixel((39, 29)) != single_screen.getpixel((0, 0))


def test_grab_rect_is_desktop_absolute(single_screen):
    image = grab_rect(140, 80, 200, 150)
    assert image.mode == "RGB" and image.size == (200, 150)
    assert same_pixels(image, single_screen.crop((100, 50, 300, 200)))


@pytest.mark.parametrize(
    ("rect", "fragment"),
    [((0, 0, 0, 10), "positive width"), ((1200, 700, 200, 100), "not on any current monitor")],
)
def test_grab_rect_outside_the_screen_says_so(single_screen, rect, fragment):
    with pytest.raises(CaptureError, match=fragment):
        grab_rect(*rect)


def test_two_monitors_are_listed_in_order(dual_screen):
    assert list_monitors() == [Monitor(0, *DUAL[0]), Monitor(1, *DUAL[1])]


def test_grab_all_grabs_each_monitor_separately(dual_screen):
    shots = grab_all()
    assert [m.index for m, _ in shots] == [0, 1]
    assert [image.size for _, image in shots] == [(1024, 768), (800, 600)]
    _, second = shots[1]
    # the pattern is at desktop 1074,60: monitor-local 50,60 on the second monitor
    assert same_pixels(second.crop((50, 60, 350, 260)), dual_screen)


def test_grab_rect_on_the_second_monitor(dual_screen):
    image = grab_rect(1024 + 50 + 10, 60 + 20, 100, 50)
    assert same_pixels(image, dual_screen.crop((10, 20, 110, 70)))


def test_grab_rect_across_two_monitors_is_refused(dual_screen):
    with pytest.raises(CaptureError, match="not on any current monitor"):
        grab_rect(1000, 10, 100, 50)


def test_no_display_gives_one_sentence(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":" + str(os.getpid() % 1000 + 5000))  # nothing listens there
    with pytest.raises(CaptureError) as caught:
        list_monitors()
    message = str(caught.value)
    assert message.startswith("Could not open the screen") and "\n" not in message


def test_xvfb_cannot_place_a_monitor_left_of_the_origin():
    """Documents the limit of this test setup: negative offsets are tested without X (test_capture.py)."""
    with pytest.raises(ValueError, match="left of or above the origin"):
        XvfbServer(monitors=[(-640, 0, 640, 480), (0, 0, 800, 600)])
