"""Private X servers for tests, so X11 tests never touch a real display.

Usage in a test module::

    from tests.xvfb import xvfb_fixture, xdotool, needs_xvfb

    pytestmark = [needs_xvfb, pytest.mark.x11]
    xvfb = xvfb_fixture(1280, 720)                               # one monitor
    xvfb2 = xvfb_fixture(monitors=[(0, 0, 800, 600), (800, 0, 640, 480)])   # two, side by side

    def test_something(xvfb):            # DISPLAY points at the private server for the whole module
        xdotool("mousemove", "10", "10")

In-process Tk: Tk never closes its X connection, even after root.destroy(), and the next Tk event
loop run exits the whole process (Xlib "XIO: fatal IO error") once that server is gone. So the
fixtures (and `shared_xvfb`) start one server per layout and keep it until the test process ends;
the kernel then stops it (PR_SET_PDEATHSIG), so no server outlives the run, even after a crash. Use
the `XvfbServer` context manager, which kills its server on exit, only where Tk runs in a subprocess.

Two monitors: Xvfb's ``+xinerama`` with two ``-screen`` options stacks both screens at 0,0 (no layout
without an xorg.conf), so instead one wide screen is split into RandR 1.5 monitors with XRRSetMonitor,
which is what mss, Tk and window managers read. X11 root coordinates start at 0,0, so a monitor left
of the origin cannot be backed by pixels here: the layout is refused with a ValueError.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

MonitorRect = tuple[int, int, int, int]  # left, top, width, height

_ON_WINDOWS = ("Windows fact: there is no X server (tests/test_windows_e2e.py drives the Windows tray under Wine "
               "from Linux instead)")
needs_xvfb = pytest.mark.skipif(sys.platform == "win32" or shutil.which("Xvfb") is None,
                                reason=_ON_WINDOWS if sys.platform == "win32" else "Xvfb is not installed")
needs_xdotool = pytest.mark.skipif(sys.platform == "win32" or shutil.which("xdotool") is None,
                                   reason=_ON_WINDOWS if sys.platform == "win32" else "xdotool is not installed")

_FIRST_DISPLAY = 100


def _display_in_use(number: int) -> bool:
    return Path(f"/tmp/.X{number}-lock").exists() or Path(f"/tmp/.X11-unix/X{number}").exists()


def _candidate_displays() -> Iterator[int]:
    """Free-looking display numbers, spread by pid so parallel test runs rarely race for one."""
    start = _FIRST_DISPLAY + os.getpid() % 500
    for number in range(start, start + 400):
        if not _display_in_use(number):
            yield number


class XvfbServer:
    """One Xvfb process; a context manager that sets DISPLAY while it runs and restores it after."""

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        *,
        monitors: Sequence[MonitorRect] | None = None,
        depth: int = 24,
        start_timeout: float = 10.0,
    ) -> None:
        if monitors:
            for left, top, w, h in monitors:
                if left < 0 or top < 0:
                    raise ValueError(
                        "X11 root coordinates start at 0,0, so Xvfb cannot back a monitor left of or above "
                        "the origin; shift the layout so every monitor has left >= 0 and top >= 0."
                    )
                if w <= 0 or h <= 0:
                    raise ValueError(f"Monitor {left},{top} {w}x{h} needs a positive width and height.")
            width = max(left + w for left, _, w, _ in monitors)
            height = max(top + h for _, top, _, h in monitors)
        self.width = width
        self.height = height
        self.depth = depth
        self.monitors: list[MonitorRect] = list(monitors) if monitors else [(0, 0, width, height)]
        self.start_timeout = start_timeout
        self.display: str = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server; closed in stop()
        self._saved_display: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """os.environ with DISPLAY pointing here, for subprocesses."""
        env = dict(os.environ)
        env["DISPLAY"] = self.display
        return env

    def start(self) -> XvfbServer:
        last_error = "no free display number"
        for attempt, number in enumerate(_candidate_displays()):
            if attempt >= 8:
                break
            error = self._try_start(number)
            if error is None:
                if len(self.monitors) > 1 or self.monitors[0] != (0, 0, self.width, self.height):
                    define_randr_monitors(self.display, self.monitors)
                return self
            last_error = error
        raise RuntimeError(f"Could not start Xvfb: {last_error}")

    def _try_start(self, number: int) -> str | None:
        """Start on :number and wait until it accepts clients (-displayfd); None on success, else why not."""
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    "Xvfb",
                    f":{number}",
                    "-screen",
                    "0",
                    f"{self.width}x{self.height}x{self.depth}",
                    "-nolisten",
                    "tcp",
                    "-noreset",
                    "-br",  # a black root that the server repaints, like a real desktop behind windows
                    "-dpi",
                    "96",
                    "-displayfd",
                    str(write_fd),
                ],
                stdout=subprocess.DEVNULL,
                stderr=self._log,
                pass_fds=(write_fd,),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(write_fd)
        try:
            deadline = time.monotonic() + self.start_timeout
            data = b""
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill()
                    return f"Xvfb :{number} did not become ready within {self.start_timeout:.0f} s"
                ready, _, _ = select.select([read_fd], [], [], remaining)
                if not ready:
                    continue
                chunk = os.read(read_fd, 64)
                if not chunk:  # pipe closed: the server exited (display taken by a racing run, usually)
                    self._kill()
                    return f"Xvfb :{number} exited during start-up: {self.log_tail()}"
                data += chunk
        finally:
            os.close(read_fd)
        self.display = f":{int(data.strip())}"
        return None

    def log_tail(self, limit: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:].strip()

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def stop(self) -> None:
        self._kill()
        self._log.close()

    def __enter__(self) -> XvfbServer:
        self.start()
        self._saved_display = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = self.display
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved_display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = self._saved_display
        self.stop()


def _die_with_parent() -> None:
    """Runs in the Xvfb child before exec: ask Linux to SIGTERM it when the test process exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


_shared: dict[tuple, XvfbServer] = {}


def shared_xvfb(width: int = 1280, height: int = 720, *, monitors: Sequence[MonitorRect] | None = None) -> XvfbServer:
    """A started server for this layout, the same one for every caller in this process; it runs until
    the process ends (see the module docstring for why). DISPLAY is not changed."""
    key = (width, height, tuple(monitors) if monitors else None)
    server = _shared.get(key)
    if server is None or server.process is None or server.process.poll() is not None:
        server = XvfbServer(width, height, monitors=monitors).start()
        _shared[key] = server
    return server


@contextlib.contextmanager
def using_display(server: XvfbServer) -> Iterator[XvfbServer]:
    """Point DISPLAY at `server` for the block, then restore it."""
    saved = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = server.display
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = saved


def xvfb_fixture(
    width: int = 1280,
    height: int = 720,
    *,
    monitors: Sequence[MonitorRect] | None = None,
    scope: str = "module",
):
    """A pytest fixture yielding a started (shared) XvfbServer, with DISPLAY set while it is in use."""

    @pytest.fixture(scope=scope)
    def _xvfb() -> Iterator[XvfbServer]:
        with using_display(shared_xvfb(width, height, monitors=monitors)) as server:
            yield server

    return _xvfb


def xdotool(*args: str, timeout: float = 10.0) -> str:
    """Run xdotool against the current DISPLAY and return its stdout; fail loudly with its stderr."""
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"xdotool {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --- RandR 1.5 monitors through libX11/libXrandr (no xrandr binary needed) -------------------------


class _XRRMonitorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_ulong),
        ("primary", ctypes.c_int),
        ("automatic", ctypes.c_int),
        ("noutput", ctypes.c_int),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("mwidth", ctypes.c_int),
        ("mheight", ctypes.c_int),
        ("outputs", ctypes.POINTER(ctypes.c_ulong)),
    ]


class _XRRScreenResources(ctypes.Structure):
    _fields_ = [
        ("timestamp", ctypes.c_ulong),
        ("configTimestamp", ctypes.c_ulong),
        ("ncrtc", ctypes.c_int),
        ("crtcs", ctypes.c_void_p),
        ("noutput", ctypes.c_int),
        ("outputs", ctypes.POINTER(ctypes.c_ulong)),
        ("nmode", ctypes.c_int),
        ("modes", ctypes.c_void_p),
    ]


def define_randr_monitors(display: str, monitors: Sequence[MonitorRect]) -> None:
    """Split the screen into the given monitors. The first takes over Xvfb's output, so its automatic
    full-screen monitor disappears and exactly these monitors remain, the first one primary."""
    x11 = ctypes.CDLL("libX11.so.6")
    xrandr = ctypes.CDLL("libXrandr.so.2")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xrandr.XRRGetScreenResources.restype = ctypes.POINTER(_XRRScreenResources)
    xrandr.XRRGetScreenResources.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    xrandr.XRRFreeScreenResources.argtypes = [ctypes.POINTER(_XRRScreenResources)]
    xrandr.XRRAllocateMonitor.restype = ctypes.POINTER(_XRRMonitorInfo)
    xrandr.XRRAllocateMonitor.argtypes = [ctypes.c_void_p, ctypes.c_int]
    xrandr.XRRSetMonitor.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XRRMonitorInfo)]
    xrandr.XRRFreeMonitors.argtypes = [ctypes.POINTER(_XRRMonitorInfo)]

    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        raise RuntimeError(f"Could not open X display {display} to define monitors.")
    try:
        root = x11.XDefaultRootWindow(dpy)
        resources = xrandr.XRRGetScreenResources(dpy, root)
        if not resources or resources.contents.noutput < 1:
            raise RuntimeError(f"X display {display} reports no RandR output; cannot define monitors.")
        output = resources.contents.outputs[0]
        xrandr.XRRFreeScreenResources(resources)
        for number, (left, top, width, height) in enumerate(monitors):
            first = number == 0
            info_ptr = xrandr.XRRAllocateMonitor(dpy, 1 if first else 0)
            info = info_ptr.contents
            info.name = x11.XInternAtom(dpy, f"DOTOCR-TEST-{number}".encode(), 0)
            info.primary = int(first)
            info.automatic = 0
            info.x, info.y, info.width, info.height = left, top, width, height
            info.mwidth, info.mheight = width * 254 // 960, height * 254 // 960  # 96 dpi, in mm
            if first:
                info.outputs[0] = output
            xrandr.XRRSetMonitor(dpy, root, info_ptr)
            xrandr.XRRFreeMonitors(info_ptr)
        x11.XSync(dpy, 0)
    finally:
        x11.XCloseDisplay(dpy)
