"""Start-up times of dotocr's commands against their budgets (issue 8), medians of N fresh processes.

    python benchmarks/startup.py --runs 5 --json out.json

Measured, each in a fresh interpreter from this checkout:
- `--help` and `--version` of `dotocr`, `dotocr-serve`, `dotocr-tray` (budget 0.5 s), beside a bare
  `python -c pass` for the interpreter's own start;
- `dotocr ocr small.png` against a warm `dotocr-serve` on the tiny checkpoint (budget 1.5 s);
- `dotocr ocr notes.png` where notes.png is not an image: refused before any model loads;
- `dotocr-tray` under Xvfb: launch until its tray icon window (WM_CLASS instance `dotocrSystemTrayIcon`, made by pystray
  after the menu is built) exists (budget 1 s). Needs Xvfb and xdotool.
For the two `dotocr ocr` cases an extra run under `python -X importtime` checks that torch and transformers
were never imported. The console scripts are run as `python -m ...`, the same code without the launcher.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import REPO, machine, median, write_json  # noqa: E402

TINY = REPO / "tests" / "data" / "dots_tiny"
PY = sys.executable
HEAVY = ("torch", "transformers")
BUDGETS = {"help": 0.5, "ocr_warm": 1.5, "tray_icon": 1.0}
ENTRIES = {"dotocr": "dotocr", "dotocr-serve": "dotocr.server", "dotocr-tray": "dotocr.tray"}


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A private settings file and data folder, this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=str(REPO), DOTOCR_CONFIG=str(home / "settings.toml"),
               DOTOCR_DATA_DIR=str(home / "data"), HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def time_command(argv: list[str], env: dict[str, str], runs: int, expect: int = 0) -> dict[str, Any]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, cwd=REPO, timeout=120)
        seconds.append(time.perf_counter() - start)
        if done.returncode != expect:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return {"median_s": round(median(seconds), 3), "runs_s": [round(s, 3) for s in seconds]}


def heavy_imports(argv: list[str], env: dict[str, str], expect: int) -> list[str]:
    """The heavy packages one run of `argv` (a `python -m ...` command) imported, read from -X importtime."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, cwd=REPO,
                          timeout=120)
    if done.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()
             if line.startswith("import time:")}
    return sorted(n for n in names if n.split(".")[0] in HEAVY and "." not in n)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("dotocr-serve exited before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if b'"ready"' in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("dotocr-serve did not get ready")


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure_ocr(home: Path, runs: int) -> dict[str, Any]:
    from PIL import Image, ImageDraw

    small = home / "small.png"
    image = Image.new("RGB", (160, 48), "white")
    ImageDraw.Draw(image).text((6, 16), "Invoice 4721", fill="black")
    image.save(small)
    notes = home / "notes.png"
    notes.write_text("meeting notes, not a picture\n", encoding="utf-8")

    port = free_port()
    (home / "settings.toml").write_text(f"api_port = {port}\n", encoding="utf-8")
    env = clean_env(home)
    results: dict[str, Any] = {}

    refused = [PY, "-m", "dotocr", "ocr", str(notes), "--model", str(TINY), "--local"]
    results["ocr_not_an_image"] = time_command(refused, env, runs, expect=1)
    results["ocr_not_an_image"]["heavy_imports"] = heavy_imports(refused, env, expect=1)

    log = (home / "server.log").open("wb")
    server = subprocess.Popen([PY, "-m", "dotocr.server", "--port", str(port), "--model", str(TINY),
                               "--device", "cpu", "--precision", "fp32"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_ready(port, server)
        warm = [PY, "-m", "dotocr", "ocr", str(small), "--model", str(TINY), "--max-new-tokens", "8"]
        results["ocr_warm_server"] = time_command(warm, env, runs)
        results["ocr_warm_server"]["heavy_imports"] = heavy_imports(warm, env, expect=0)
    finally:
        stop(server, signal.SIGINT)
        log.close()
    return results


def measure_tray(home: Path, runs: int) -> dict[str, Any]:
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        return {"skipped": "needs Xvfb and xdotool"}
    sys.path.insert(0, str(REPO))
    from tests.xvfb import XvfbServer

    seconds, started = [], []
    with XvfbServer(1280, 720) as xvfb:
        for n in range(runs):
            data = home / f"tray-{n}"
            env = clean_env(data, DISPLAY=xvfb.display)
            argv = [PY, "-m", "dotocr.tray", "--model", str(TINY), "--device", "cpu", "--precision", "fp32",
                    "--hotkey", "ctrl+alt+shift+F9"]
            start = time.perf_counter()
            err = (home / f"tray-{n}.err").open("wb")  # noqa: SIM115 - closed after the tray stops
            tray = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
            try:
                while True:
                    found = subprocess.run(["xdotool", "search", "--classname", "dotocrSystemTrayIcon"], env=env,
                                           capture_output=True)
                    if found.returncode == 0 and found.stdout.strip():
                        seconds.append(time.perf_counter() - start)
                        break
                    if tray.poll() is not None or time.perf_counter() - start > 60:
                        raise SystemExit("dotocr-tray showed no icon window within 60 s")
                    time.sleep(0.01)
                log = data / "data" / "tray.log"
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not (log.exists() and "tray started" in log.read_text()):
                    time.sleep(0.01)
                started.append(time.perf_counter() - start)
            finally:
                stop(tray)
                err.close()
    return {"icon_window": {"median_s": round(median(seconds), 3), "runs_s": [round(s, 3) for s in seconds]},
            "tray_started_log": {"median_s": round(median(started), 3), "runs_s": [round(s, 3) for s in started]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--skip-tray", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "budgets_s": BUDGETS}
    with tempfile.TemporaryDirectory(prefix="dotocr-startup-") as tmp:
        home = Path(tmp)
        env = clean_env(home)
        results["python_pass"] = time_command([PY, "-c", "pass"], env, args.runs)
        for name, module in ENTRIES.items():
            for flag in ("--help", "--version"):
                results[f"{name} {flag}"] = time_command([PY, "-m", module, flag], env, args.runs)
        results.update(measure_ocr(home, args.runs))
        if not args.skip_tray:
            results["tray"] = measure_tray(home, args.runs)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    print(f"{'case':<28} {'median s':>9}  budget  heavy imports")
    rows = [(k, v) for k, v in results.items() if isinstance(v, dict) and "median_s" in v]
    rows += [(f"tray {k}", v) for k, v in results.get("tray", {}).items() if isinstance(v, dict)]
    for name, row in rows:
        budget = (BUDGETS["help"] if name.endswith(("--help", "--version")) else
                  BUDGETS["ocr_warm"] if name == "ocr_warm_server" else
                  BUDGETS["tray_icon"] if name == "tray icon_window" else None)
        mark = "" if budget is None else f"{budget:.1f} {'ok' if row['median_s'] <= budget else 'OVER'}"
        heavy = ", ".join(row.get("heavy_imports", [])) or ("none" if "heavy_imports" in row else "")
        print(f"{name:<28} {row['median_s']:>9.3f}  {mark:<7} {heavy}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
