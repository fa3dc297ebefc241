"""Start-up structure of the real `dotocr-tray` under Xvfb: the icon and its menu come up before anything heavy
is imported (torch, transformers, the web server) and the model loads behind them. The clock is measured by
benchmarks, not here; these tests check the structure that makes it fast.

A minimal system tray (tests.tray_helpers.SystemTray) takes the icon's dock request, as a desktop panel would;
an audit hook in the tray's process refuses the heavy imports on every thread except the loader's and the
local API's, and says so on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dotocr
from tests.tray_helpers import SystemTray, tiny_settings, wait_for
from tests.xvfb import needs_xvfb, xvfb_fixture

pytestmark = [needs_xvfb, pytest.mark.x11, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
xvfb = xvfb_fixture(640, 480)

GUARD = r'''
import runpy, sys, threading
HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "starlette", "dotocr.server",
         "dotocr.engine.model.modeling_dots_ocr")
ALLOWED_THREADS = ("dotocr-load", "dotocr-api")

def guard(event, args):
    if event != "import":
        return
    name = args[0]
    if any(name == h or name.startswith(h + ".") for h in HEAVY):
        thread = threading.current_thread().name
        if thread not in ALLOWED_THREADS:
            print(f"BLOCKED import of {name} on thread {thread}", file=sys.stderr, flush=True)
            raise ImportError(f"{name} may not be imported on the way to the icon")

sys.addaudithook(guard)
sys.argv = ["dotocr-tray", *sys.argv[1:]]
runpy.run_module("dotocr.tray", run_name="__main__")
'''


def test_the_icon_and_menu_come_up_without_heavy_imports_and_the_model_loads_behind_them(xvfb, dots_tiny,
                                                                                          tmp_path):
    guard = tmp_path / "guarded_tray.py"
    guard.write_text(GUARD, encoding="utf-8")
    settings = tiny_settings(dots_tiny)
    flags = ["--model", str(dots_tiny), "--device", "cpu", "--precision", "fp32",
             "--max-new-tokens", str(settings.max_new_tokens), "--hotkey", "ctrl+alt+shift+k"]
    data = Path(os.environ["DOTOCR_DATA_DIR"])  # conftest gives every test its own folders
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    err_file = tmp_path / "stderr.txt"
    with SystemTray() as tray, err_file.open("w", encoding="utf-8") as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(guard), *flags], cwd=REPO, env=env,
                                   stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: tray.docked or process.poll() is not None, 60)
            assert tray.docked, err_file.read_text(encoding="utf-8")
            print(f"\nicon docked {(tray.docked[0][0] - started) * 1000:.0f} ms after launch "
                  f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
            log = data / "tray.log"
            wait_for(lambda: log.exists() and "Model ready" in log.read_text(encoding="utf-8"), 120)
        finally:
            process.terminate()
            process.wait(30)
    stderr = err_file.read_text(encoding="utf-8")
    assert "BLOCKED" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_version_answers_without_a_display_or_the_engine():
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "dotocr.tray", "--version"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"dotocr-tray {dotocr.__version__}"
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"torch", "transformers", "fastapi", "uvicorn", "tkinter", "pystray", "dotocr.engine", "PIL"}
    assert not imported & heavy, imported & heavy
