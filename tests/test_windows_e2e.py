"""dotocr's Windows paths end to end: the Windows Python (python.org's CPython 3.11 with PyPI's Windows torch and
the dotocr wheel, installed by scripts/setup_wine_python.sh) runs under Wine on a private Xvfb, driven from
Linux with xdotool, xclip, curl and a pseudo-terminal, the way a person would drive it:

- the tray: the hotkey opens the overlay, a drag puts the text on the Windows clipboard (read back through the
  Win32 API and, as Wine hands it to X, through xclip), the balloon shows, the history is written; a second
  `dotocr-tray` hands its capture over; "Start at login" writes and removes the Run key with pythonw.exe; Quit
  leaves no process; a hotkey another program owns is one sentence;
- the CLI with non-ASCII folder and file names, its text on a Windows pipe (cp1252 unless told) and on the
  console; `dotocr-serve` answering curl; `dotocr doctor` on a CPU-only torch.

Wine stands in for the Windows API, not for Windows: what it cannot show is listed in docs/windows.md.
"""

from __future__ import annotations

import sys

import pytest

if sys.platform == "win32":
    pytest.skip("these tests drive Wine from Linux (xdotool, xclip, a pseudo-terminal); under Windows Python "
                "they have nothing to drive", allow_module_level=True)

import json  # noqa: E402 - after the skip: pty and termios exist on POSIX only
import os  # noqa: E402
import pty  # noqa: E402
import select  # noqa: E402
import subprocess
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from dotocr.capture.overlay import dimmed
from dotocr.desktop.hotkey import parse_hotkey
from dotocr.desktop.hotkey.base import taken_message
from dotocr.desktop.hotkey.windows import MOD_NOREPEAT, virtual_key
from dotocr.engine import DotOCRInference
from tests.capture_helpers import ImageWindow, drag_args, pattern_image, pump_until
from tests.cli_helpers import free_port
from tests.test_tray_e2e import pixel
from tests.tray_helpers import tiny_settings, xclip_read, xclip_write
from tests.wine import Wine, require_wine, winpath
from tests.xvfb import needs_xdotool, needs_xvfb, xdotool, xvfb_fixture

pytestmark = [needs_xvfb, needs_xdotool, pytest.mark.x11, pytest.mark.wine]

HOTKEY = "ctrl+alt+shift+o"
OVERLAY_TITLE = "dotocr selection"  # under Wine the overlay's X class is python.exe, so it is found by title
STARTUP_S = 180  # Windows torch and the tiny checkpoint load in about 20 s under Wine on 2 idle cores

xvfb = xvfb_fixture(1184, 704, scope="module")  # a size no other module uses: this server is Wine's alone


# -- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wine(xvfb) -> Iterator[Wine]:
    """One Wine session on this module's display: any server left from another display is ended first, so
    Wine's desktop and tray window open here, and everything is ended after."""
    require_wine()
    session = Wine()
    session.shut_down()
    yield session
    session.shut_down()


@pytest.fixture
def win_env(wine: Wine, tmp_path: Path) -> dict[str, str]:
    """The test's own settings and data folders, named as Windows names them."""
    data = tmp_path / "data"
    return wine.env(DOTOCR_CONFIG=winpath(tmp_path / "config" / "settings.toml"), DOTOCR_DATA_DIR=winpath(data))


def tiny_flags(dots_tiny: Path) -> list[str]:
    settings = tiny_settings(dots_tiny)
    return ["--model", winpath(dots_tiny), "--device", "cpu", "--precision", "fp32", "--decoder", "torch",
            "--max-new-tokens", str(settings.max_new_tokens), "--max-image-size", str(settings.max_image_size)]


def reference_text(dots_tiny: Path, image: Image.Image) -> str:
    """What the same engine reads from `image` on Linux: greedy fp32 decoding on the CPU gives the same tokens
    on Windows torch, so the Windows side must produce exactly this text."""
    return DotOCRInference(tiny_settings(dots_tiny)).ocr(image).text


def x_window(name: str) -> str | None:
    done = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", name], capture_output=True, text=True,
                          timeout=10)
    ids = done.stdout.split()
    return ids[0] if done.returncode == 0 and ids else None


def x_clipboard() -> str | None:
    """The X clipboard through xclip, or None while its owner does not answer: Wine's clipboard thread may be
    busy taking the previous X owner's text in when the Windows side copies."""
    try:
        return xclip_read()
    except subprocess.TimeoutExpired:
        return None


def log_text(data: Path) -> str:
    path = data / "tray.log"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def screenshot(path: Path) -> None:
    """The whole Xvfb screen, to look at when a step fails (and for docs/windows.md)."""
    subprocess.run(["import", "-window", "root", str(path)], capture_output=True, timeout=30)


# -- the tray ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_tray_under_wine_end_to_end(wine, win_env, dots_tiny, tmp_path):
    root = tk.Tk()
    known = pattern_image(320, 240)
    left, top = 420, 260
    image_window = ImageWindow(root, known, left, top)  # a Linux window: Wine's GDI grabs it from the X screen
    probe = (left + 4, top + 4)
    original, dim_value = known.getpixel((4, 4)), dimmed(known).getpixel((4, 4))
    crop_box = (40, 30, 140, 110)
    expected = reference_text(dots_tiny, known.crop(crop_box))
    data = tmp_path / "data"
    wait = lambda condition, timeout: pump_until(root, condition, timeout)  # noqa: E731
    tray = wine.popen_logged(["--hotkey", HOTKEY, *tiny_flags(dots_tiny)], tmp_path / "tray-output.txt",
                             exe="Scripts/dotocr-tray.exe", env=win_env)
    try:
        wait(lambda: "Model ready" in log_text(data) and "tray started" in log_text(data), STARTUP_S)
        tray_window = wait_for_value(root, lambda: x_window("Wine System Tray"), 30)

        # 1. the hotkey, with a Wine window focused (Wine hears X keys only then), opens the overlay
        xclip_write("sentinel")
        xdotool("windowfocus", "--sync", tray_window)
        xdotool("key", HOTKEY)
        wait(lambda: pixel(*probe) == dim_value and x_window(OVERLAY_TITLE) is not None, 30)
        screenshot(tmp_path / "overlay.png")

        # 2. a drag: the text lands on the Windows clipboard, which Wine also offers to X
        drag = subprocess.Popen(["xdotool", *drag_args((left + 40, top + 30), (left + 139, top + 109))])
        wait(lambda: drag.poll() is not None, 10)
        wait(lambda: x_clipboard() not in (None, "sentinel"), 120)
        assert x_clipboard() == expected
        assert wine.probe("clipboard") == expected

        # 3. the balloon shows (Wine draws it as a tooltip window of its tray), and the history has the text
        wait(lambda: any(cls == "tooltips_class32" for cls, _title, _pid in wine.probe("windows")), 30)
        screenshot(tmp_path / "balloon.png")
        history = json.loads((data / "history.json").read_text(encoding="utf-8"))
        assert [item["text"] for item in history["items"]] == [expected]

        # 4. a second dotocr-tray hands its capture to this one and exits 0; Esc cancels it
        second = wine.popen(["--capture"], exe="Scripts/dotocr-tray.exe", env=win_env)
        wait(lambda: second.poll() is not None, 120)
        assert second.returncode == 0, second.stdout.read().decode(errors="replace")
        wait(lambda: pixel(*probe) == dim_value, 30)
        xdotool("key", "Escape")
        wait(lambda: pixel(*probe) == original and x_window(OVERLAY_TITLE) is None, 30)
        assert wine.probe("clipboard") == expected

        # 5. "Start at login" writes the Run key with pythonw.exe (no console window at login); again removes it
        choose_from_menu(root, wine, tray_window, ups=5)
        command = wait_for_value(root, lambda: wine.probe("run-key"), 30)
        assert command.startswith('"') and command.split('"')[1].lower().endswith("\\pythonw.exe"), command
        assert "-m dotocr.tray" in command and f"--hotkey {HOTKEY}" in command
        choose_from_menu(root, wine, tray_window, ups=5)
        wait(lambda: wine.probe("run-key") is None, 30)

        # 6. Quit: the tray ends with 0 and no process of ours is left
        choose_from_menu(root, wine, tray_window, ups=0)
        wait(lambda: tray.poll() is not None, 60)
        assert tray.returncode == 0
        wait(lambda: not wine.ours(), 30)
    finally:
        screenshot(tmp_path / "last.png")
        wine.kill_all()
        image_window.destroy()
        root.destroy()
    log = log_text(data)
    assert "Traceback" not in log, log


def wait_for_value(root: tk.Tk, read: Callable[[], object], timeout: float) -> object:
    """Turn the Tk loop until `read()` gives something truthy; return it."""
    found: list[object] = []
    pump_until(root, lambda: bool(found.append(read()) or found[-1]), timeout)
    return found[-1]


def choose_from_menu(root: tk.Tk, wine: Wine, tray_window: str, *, ups: int) -> None:
    """Right-click the icon in Wine's tray window, then End (Quit, the last item), `ups` times Up, and Enter.
    Wine keeps another process's menu to itself (no item rectangles from outside), so the item is reached by
    keys, counted from the bottom of dotocr/tray/menu.py's menu: Quit, Reload settings, Open settings file,
    Free GPU memory, Expose local API, Start at login."""
    xdotool("mousemove", "--window", tray_window, "9", "10", "click", "3")  # the first icon of the tray window
    seen: list[object] = []
    try:
        pump_until(root, lambda: popup_menu_shown(wine, seen), 30)
        # Wine hears X keys only while one of its windows has the X focus, and the menu's own loop only then
        xdotool("windowfocus", "--sync", python_x_window())
        xdotool("key", "End", *(["Up"] * ups), "Return")
        pump_until(root, lambda: not popup_menu_shown(wine, seen), 30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the windows Wine showed last: {seen[-1:]}") from None


def python_x_window() -> str:
    """The one visible X window of the Windows Python (Wine names its X class after the program): the popup menu
    while it is open, as the tray's other windows are hidden then."""
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--classname", "python.exe"], capture_output=True,
                           text=True, timeout=10).stdout.split()
    assert len(found) == 1, f"expected one visible window of python.exe, found {found}"
    return found[0]


def popup_menu_shown(wine: Wine, seen: list[object]) -> bool:
    """Whether a popup menu (Windows' window class #32768) is on screen, asked through EnumWindows."""
    windows = wine.probe("windows")
    seen.append(windows)
    return any(cls == "#32768" for cls, _title, _pid in windows)


@pytest.mark.timeout(300)
def test_a_hotkey_another_program_owns_is_one_sentence(wine, win_env, dots_tiny, tmp_path):
    mods, vk = virtual_key(parse_hotkey(HOTKEY))
    holder = wine.popen([winpath(Path(__file__).with_name("wine_probe.py")), "hold-hotkey",
                         str(mods & ~MOD_NOREPEAT), str(vk)])
    try:
        assert json.loads(holder.stdout.readline()) == {"held": True}
        tray = wine.popen(["-m", "dotocr.tray", "--hotkey", HOTKEY, *tiny_flags(dots_tiny)], env=win_env)
        sentence = taken_message(parse_hotkey(HOTKEY))
        deadline = time.monotonic() + STARTUP_S
        while sentence not in log_text(tmp_path / "data"):
            assert tray.poll() is None, tray.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, log_text(tmp_path / "data")
            time.sleep(0.2)
        log = log_text(tmp_path / "data")
        assert "Traceback" not in log
        assert [line for line in log.splitlines() if "already taken" in line][0].endswith(sentence)
    finally:
        wine.kill_all()


# -- the CLI, the server, doctor -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(dots_tiny, tmp_path_factory) -> tuple[Path, str]:
    """An image in a folder and under a file name that are not ASCII, and what the engine reads from it (that
    text is not ASCII either: the tiny checkpoint reads '页' in it)."""
    folder = tmp_path_factory.mktemp("wine-cli") / "扫描 données"
    folder.mkdir()
    image = pattern_image(320, 240)
    path = folder / "图像 ü.png"
    image.save(path)
    text = reference_text(dots_tiny, image)
    assert any(ord(char) > 255 for char in text), text  # the point of this image: text cp1252 cannot hold
    return path, text


@pytest.mark.timeout(300)
def test_the_cli_reads_a_non_ascii_path_and_writes_utf8_to_a_windows_pipe(wine, win_env, dots_tiny, page):
    path, text = page
    done = wine.run(["ocr", winpath(path), "--local", "--format", "json", *tiny_flags(dots_tiny)],
                    exe="Scripts/dotocr.exe", env=win_env, timeout=240)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (line,) = done.stdout.decode("utf-8").splitlines()  # UTF-8 on the pipe, never cp1252's "?" or a crash
    result = json.loads(line)
    assert result["text"] == text
    assert result["file"].endswith("扫描 données\\图像 ü.png")
    assert "Traceback" not in done.stderr.decode(errors="replace")


@pytest.mark.timeout(300)
def test_the_cli_prints_non_ascii_text_on_the_console(wine, win_env, dots_tiny, page):
    """A pseudo-terminal makes Wine give the Windows Python a real console (sys.stdout.isatty())."""
    path, text = page
    controller, terminal = pty.openpty()
    try:
        process = wine.popen(["ocr", winpath(path), "--local", *tiny_flags(dots_tiny)], exe="Scripts/dotocr.exe",
                             env=win_env, stdin=terminal, stdout=terminal, stderr=terminal)
        os.close(terminal)
        output = read_until_exit(controller, process, 240)
    finally:
        os.close(controller)
    assert process.returncode == 0, output
    shown = output.decode("utf-8", errors="replace")
    assert "页" in shown and text.splitlines()[0][:8] in shown, shown
    assert "Traceback" not in shown


def read_until_exit(fd: int, process: subprocess.Popen, timeout: float) -> bytes:
    """Everything the terminal shows until the program ends (a pty must be read, or the program blocks)."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the last holder of the terminal closed it
                chunk = b""
            output += chunk
            if not chunk and process.poll() is not None:
                return output
        elif process.poll() is not None:
            return output
    process.kill()
    raise AssertionError(f"the program did not end in {timeout:g} s; it showed {output[-2000:]!r}")


@pytest.mark.timeout(300)
def test_dotocr_serve_answers_curl_from_linux(wine, win_env, dots_tiny, page):
    path, text = page
    port = free_port()
    server = wine.popen(["--port", str(port), *tiny_flags(dots_tiny)], exe="Scripts/dotocr-serve.exe", env=win_env)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not health_is(port, "ready"):
            assert server.poll() is None, server.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "dotocr-serve did not get ready"
            time.sleep(0.5)
        done = subprocess.run(["curl", "-sS", "--fail-with-body", "-F", f"file=@{path}", "-F", "prompt=text",
                               f"http://127.0.0.1:{port}/ocr"], capture_output=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["text"] == text
    finally:
        wine.kill_all()


def health_is(port: int, status: str) -> bool:
    done = subprocess.run(["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{port}/health"],
                          capture_output=True, timeout=30)
    try:
        return done.returncode == 0 and json.loads(done.stdout).get("status") == status
    except ValueError:
        return False


@pytest.mark.timeout(300)
def test_doctor_on_a_cpu_only_torch_says_to_install_the_cuda_build(wine, win_env, dots_tiny):
    done = wine.run(["doctor", "--json", "--model", winpath(dots_tiny)], exe="Scripts/dotocr.exe", env=win_env,
                    timeout=240)
    report = json.loads(done.stdout.decode("utf-8"))
    checks = {check["key"]: check for check in report["checks"]}
    assert report["ok"] == (done.returncode == 0)
    assert checks["os"]["details"]["system"] == "Windows"
    torch_check = checks["torch"]
    assert torch_check["status"] == "warn"
    version, summary = torch_check["summary"].split(": ", 1)
    assert version.endswith("+cpu") and summary == "CPU-only build: OCR will run on the CPU, slowly", torch_check
    assert "pip install torch --index-url https://download.pytorch.org/whl/cu" in torch_check["advice"]
    assert checks["hotkey"]["status"] == "ok", checks["hotkey"]
    assert "Traceback" not in done.stderr.decode(errors="replace")
