"""Capture logic that needs no display: DPI awareness calls, geometry strings, regions, selection maths."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dotocr.capture import dpi
from dotocr.capture.overlay import MIN_SELECTION, dimmed, geometry_string, selection_box
from dotocr.capture.region import Region
from dotocr.capture.screens import Monitor

pytestmark = pytest.mark.timeout(30)


# --- DPI awareness -------------------------------------------------------------------------------
# These tests fake the Win32 boundary (ctypes.windll: user32 and shcore), which cannot run on Linux.
# The fakes record each call so the order and arguments of the real calls are checked.


class FakeFunction:
    def __init__(self, calls: list, name: str, result) -> None:
        self.calls, self.name, self.result = calls, name, result

    def __call__(self, *args):
        self.calls.append((self.name, args))
        return self.result


class FakeDLL:
    """Has only the functions given; any other attribute raises AttributeError, like an old Windows."""

    def __init__(self, calls: list, **results) -> None:
        for name, result in results.items():
            setattr(self, name, FakeFunction(calls, name, result))


class FakeWinDLL:
    def __init__(self, user32: dict, shcore: dict | None) -> None:
        self.calls: list = []
        self.user32 = FakeDLL(self.calls, **user32)
        self._shcore = None if shcore is None else FakeDLL(self.calls, **shcore)

    @property
    def shcore(self):
        if self._shcore is None:
            raise OSError("[WinError 126] The specified module could not be found")  # like Windows 7
        return self._shcore


@pytest.fixture(autouse=True)
def _fresh_dpi_state(monkeypatch):
    monkeypatch.setattr(dpi, "_result", None)


def test_per_monitor_v2_is_tried_first_with_the_minus_four_context():
    fake = FakeWinDLL({"SetProcessDpiAwarenessContext": 1, "SetProcessDPIAware": 1}, {"SetProcessDpiAwareness": 0})
    assert dpi.enable_dpi_awareness(fake) == "per-monitor-v2"
    assert [name for name, _ in fake.calls] == ["SetProcessDpiAwarenessContext"]
    (context,) = fake.calls[0][1]
    assert context.value == ctypes.c_void_p(-4).value


def test_falls_back_to_shcore_per_monitor_when_v2_is_missing():
    fake = FakeWinDLL({"SetProcessDPIAware": 1}, {"SetProcessDpiAwareness": 0})
    assert dpi.enable_dpi_awareness(fake) == "per-monitor"
    assert fake.calls == [("SetProcessDpiAwareness", (2,))]


def test_falls_back_to_shcore_when_v2_call_fails():
    fake = FakeWinDLL({"SetProcessDpiAwarenessContext": 0, "SetProcessDPIAware": 1}, {"SetProcessDpiAwareness": 0})
    assert dpi.enable_dpi_awareness(fake) == "per-monitor"
    assert [name for name, _ in fake.calls] == ["SetProcessDpiAwarenessContext", "SetProcessDpiAwareness"]


def test_access_denied_means_a_manifest_already_set_it():
    fake = FakeWinDLL({"SetProcessDPIAware": 1}, {"SetProcessDpiAwareness": dpi.E_ACCESSDENIED})
    assert dpi.enable_dpi_awareness(fake) == "already-set"
    assert [name for name, _ in fake.calls] == ["SetProcessDpiAwareness"]


def test_falls_back_to_system_aware_without_shcore():
    fake = FakeWinDLL({"SetProcessDPIAware": 1}, None)
    assert dpi.enable_dpi_awareness(fake) == "system"
    assert fake.calls == [("SetProcessDPIAware", ())]


def test_reports_unavailable_when_every_call_fails():
    fake = FakeWinDLL({"SetProcessDpiAwarenessContext": 0, "SetProcessDPIAware": 0}, {"SetProcessDpiAwareness": 1})
    assert dpi.enable_dpi_awareness(fake) == "unavailable"
    assert len(fake.calls) == 3


def test_second_call_does_nothing():
    fake = FakeWinDLL({"SetProcessDpiAwarenessContext": 1}, None)
    assert dpi.enable_dpi_awareness(fake) == "per-monitor-v2"
    again = FakeWinDLL({"SetProcessDpiAwarenessContext": 1}, None)
    assert dpi.enable_dpi_awareness(again) == "per-monitor-v2"
    assert dpi.enable_dpi_awareness() == "per-monitor-v2"
    assert len(fake.calls) == 1 and again.calls == []


@pytest.mark.skipif(sys.platform == "win32", reason="checks the no-op off Windows (on Windows the "
                    "call is made: the tests above)")
def test_no_op_off_windows():
    assert dpi.enable_dpi_awareness() == "not-windows"
    assert not hasattr(ctypes, "windll")


# --- geometry and selection maths ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        (Monitor(0, 0, 0, 1920, 1080), "1920x1080+0+0"),
        (Monitor(1, -1920, 0, 1920, 1080), "1920x1080+-1920+0"),
        (Monitor(2, 2560, -360, 1440, 2560), "1440x2560+2560+-360"),
        (Monitor(3, -3840, -2160, 3840, 2160), "3840x2160+-3840+-2160"),
    ],
)
def test_geometry_string_keeps_plus_before_negative_offsets(monitor, expected):
    assert geometry_string(monitor) == expected


def test_selection_box_includes_both_end_pixels_in_any_drag_direction():
    size = (800, 600)
    assert selection_box((100, 50), (299, 149), size) == (100, 50, 200, 100)
    assert selection_box((299, 149), (100, 50), size) == (100, 50, 200, 100)
    assert selection_box((299, 50), (100, 149), size) == (100, 50, 200, 100)
    assert selection_box((10, 10), (10, 10), size) == (10, 10, 1, 1)


def test_selection_box_is_clamped_to_the_monitor():
    size = (800, 600)
    assert selection_box((700, 500), (5000, 9000), size) == (700, 500, 100, 100)
    assert selection_box((20, 30), (-50, -40), size) == (0, 0, 21, 31)


def test_two_pixel_drag_is_under_the_minimum():
    _, _, width, height = selection_box((100, 100), (102, 102), (800, 600))
    assert width < MIN_SELECTION and height < MIN_SELECTION
    _, _, width, height = selection_box((100, 100), (103, 103), (800, 600))
    assert width == height == MIN_SELECTION


def test_dimmed_darkens_every_channel_and_keeps_size():
    image = Image.new("RGB", (8, 4), (200, 100, 40))
    dark = dimmed(image)
    assert dark.size == image.size and dark.mode == "RGB"
    r, g, b = dark.getpixel((3, 2))
    assert (r, g, b) == (90, 45, 18)
    assert dimmed(image.convert("RGBA")).mode == "RGB"


# --- regions ------------------------------------------------------------------------------------


def test_region_is_desktop_absolute_through_its_monitor():
    left_monitor = Monitor(1, -1920, -200, 1920, 1080)
    region = Region(left_monitor, x=100, y=250, width=300, height=40)
    assert (region.left, region.top) == (-1820, 50)
    assert region.box == (100, 250, 400, 290)


def test_region_round_trips_through_a_dict():
    region = Region(Monitor(1, -1920, 0, 1920, 1080), 5, 6, 70, 80)
    data = region.to_dict()
    assert data == {
        "monitor": {"index": 1, "left": -1920, "top": 0, "width": 1920, "height": 1080},
        "x": 5,
        "y": 6,
        "width": 70,
        "height": 80,
    }
    assert Region.from_dict(data) == region


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("not a table", "must be a table"),
        ({"x": 1, "y": 1, "width": 5, "height": 5}, "saved monitor must be a table"),
        (
            {
                "monitor": {"index": 0, "left": 0, "top": 0, "width": 10},
                "x": 0,
                "y": 0,
                "width": 5,
                "height": 5,
            },
            "'height'",
        ),
        (
            {
                "monitor": {"index": 0, "left": 0, "top": 0, "width": 10, "height": 10},
                "x": "3",
                "y": 0,
                "width": 5,
                "height": 5,
            },
            "'x'",
        ),
        (
            {
                "monitor": {"index": 0, "left": 0, "top": 0, "width": 10, "height": 10},
                "x": 0,
                "y": 0,
                "width": 0,
                "height": 5,
            },
            "positive",
        ),
        (
            {
                "monitor": {"index": 0, "left": 0, "top": 0, "width": 10, "height": 10},
                "x": 8,
                "y": 0,
                "width": 5,
                "height": 5,
            },
            "past the edge",
        ),
        (
            {
                "monitor": {"index": 0, "left": 0, "top": 0, "width": 10, "height": 10},
                "x": True,
                "y": 0,
                "width": 5,
                "height": 5,
            },
            "'x'",
        ),
    ],
)
def test_damaged_saved_region_gives_one_clear_sentence(data, fragment):
    with pytest.raises(ValueError) as caught:
        Region.from_dict(data)
    message = str(caught.value)
    assert fragment in message
    assert message.endswith(".") and "\n" not in message


def test_monitor_contains_whole_rectangles_only():
    monitor = Monitor(0, -1920, 0, 1920, 1080)
    assert monitor.contains(-1920, 0, 1920, 1080)
    assert monitor.contains(-1, 1079)
    assert not monitor.contains(0, 0)
    assert not monitor.contains(-100, 1000, 101, 10)


# --- importing -----------------------------------------------------------------------------------


def test_package_imports_without_tkinter_until_the_overlay_is_used():
    """The CLI and server import dotocr.capture paths too; a Python without Tk must still import it."""
    code = (
        "import sys; sys.modules['tkinter'] = None\n"
        "import dotocr.capture as capture\n"
        "assert capture.Region and capture.grab_rect and capture.enable_dpi_awareness\n"
        "try:\n"
        "    capture.RegionSelector\n"
        "except ImportError:\n"
        "    print('overlay needs tkinter')\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "overlay needs tkinter"


def test_unknown_attribute_is_an_attribute_error():
    import dotocr.capture as capture

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        capture.Nope  # noqa: B018
