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
Wall time is what a person waits; the children's CPU time (user + system) is printed beside it because on a
shared machine the wall time mostly measures the other jobs. `--compare CHECKOUT` times another checkout's
commands in the same run, interleaved with this one's (the warm server is this checkout's for both).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def clean_env(home: Path, code: Path = REPO, **extra: str) -> dict[str, str]:
    """A private settings file and data folder, the checkout `code` first on the path."""
    env = dict(os.environ, PYTHONPATH=str(code), DOTOCR_CONFIG=str(home / "settings.toml"),
               DOTOCR_DATA_DIR=str(home / "data"), HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def time_command(argv: list[str], env: dict[str, str], runs: int, expect: int = 0) -> dict[str, Any]:
    return side_by_side(argv, {"this": env}, runs, expect)["this"]


def side_by_side(argv: list[str], envs: dict[str, dict[str, str]], runs: int, expect: int = 0) -> dict[str, Any]:
    """`argv` timed under each environment (one per checkout), the runs interleaved so that the load from other
    jobs hits every checkout alike. This checkout ("this") must exit with `expect`; another one's exit status is
    recorded (an older checkout may lack a flag)."""
    seconds: dict[str, list[float]] = {label: [] for label in envs}
    cpu: dict[str, list[float]] = {label: [] for label in envs}
    outputs: dict[str, list[str]] = {label: [] for label in envs}
    exits: dict[str, int] = {}
    for _ in range(runs):
        for label, env in envs.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            # run from the checkout itself: `python -m` puts the working folder first on sys.path
            done = subprocess.run(argv, env=env, capture_output=True, cwd=env["PYTHONPATH"], timeout=120)
            seconds[label].append(time.perf_counter() - start)
            outputs[label].append(done.stdout.decode("utf-8", "replace"))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[label].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            exits[label] = done.returncode
            if label == "this" and done.returncode != expect:
                raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return {label: {"median_s": round(median(times), 3), "runs_s": [round(t, 3) for t in times],
                    "cpu_median_s": round(median(cpu[label]), 3), "exit": exits[label],
                    "engine_total_s": _engine_seconds(outputs[label])}
            for label, times in seconds.items()}


def _engine_seconds(outputs: list[str]) -> float | None:
    """Median of the OCR call's own `timings.total` (the server's work seen from the client) in JSON output."""
    totals = []
    for text in outputs:
        try:
            totals.append(float(json.loads(text.strip().splitlines()[-1])["timings"]["total"]))
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    return round(median(totals), 3) if totals else None


def heavy_imports(argv: list[str], env: dict[str, str], expect: int) -> list[str]:
    """The heavy packages one run of `argv` (a `python -m ...` command) imported, read from -X importtime."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True,
                          cwd=env["PYTHONPATH"], timeout=120)
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


def measure_ocr(home: Path, runs: int, compare: Path | None = None) -> dict[str, Any]:
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
    envs = {"this": env, **({"compare": clean_env(home, compare.resolve())} if compare else {})}
    results: dict[str, Any] = {}

    def timed_both(name: str, argv: list[str], expect: int) -> None:
        both = side_by_side(argv, envs, runs, expect)
        results[name] = both["this"]
        results[name]["heavy_imports"] = heavy_imports(argv, env, expect)
        if "compare" in both:
            both["compare"]["heavy_imports"] = heavy_imports(argv, envs["compare"], both["compare"]["exit"])
            results.setdefault("compared", {})[name] = both["compare"]

    timed_both("ocr_not_an_image", [PY, "-m", "dotocr", "ocr", str(notes), "--model", str(TINY), "--local"], 1)

    log = (home / "server.log").open("wb")
    # One torch thread: a tiny model is all per-op overhead, and on a shared 2-core machine two spinning
    # OpenMP threads cost more than they give (the test suite does the same).
    server = subprocess.Popen([PY, "-m", "dotocr.server", "--port", str(port), "--model", str(TINY),
                               "--device", "cpu", "--precision", "fp32"], env={**env, "OMP_NUM_THREADS": "1"},
                              stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_ready(port, server)
        timed_both("ocr_warm_server", [PY, "-m", "dotocr", "ocr", str(small), "--model", str(TINY),
                                       "--max-new-tokens", "8", "--format", "json"], 0)
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
    parser.add_argument("--compare", type=Path, metavar="CHECKOUT",
                        help="also time another checkout's --help/--version and `dotocr ocr` cases, side by side")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "budgets_s": BUDGETS}
    with tempfile.TemporaryDirectory(prefix="dotocr-startup-") as tmp:
        home = Path(tmp)
        envs = {"this": clean_env(home)}
        if args.compare:
            envs["compare"] = clean_env(home, args.compare.resolve())
            results["compare"] = str(args.compare.resolve())
        results["python_pass"] = time_command([PY, "-c", "pass"], envs["this"], args.runs)
        for name, module in ENTRIES.items():
            for flag in ("--help", "--version"):
                both = side_by_side([PY, "-m", module, flag], envs, args.runs)
                results[f"{name} {flag}"] = both["this"]
                if "compare" in both:
                    results.setdefault("compared", {})[f"{name} {flag}"] = both["compare"]
        ocr = measure_ocr(home, args.runs, args.compare)
        results.setdefault("compared", {}).update(ocr.pop("compared", {}))
        results.update(ocr)
        if not args.skip_tray:
            results["tray"] = measure_tray(home, args.runs)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    compared = results.get("compared", {})
    header = f"{'case':<28} {'median s':>9} {'cpu s':>6}  budget  heavy imports"
    print(header + ("   | compared: median s, exit, heavy" if compared else ""))
    rows = [(k, v) for k, v in results.items() if isinstance(v, dict) and "median_s" in v]
    rows += [(f"tray {k}", v) for k, v in results.get("tray", {}).items() if isinstance(v, dict)]
    for name, row in rows:
        budget = (BUDGETS["help"] if name.endswith(("--help", "--version")) else
                  BUDGETS["ocr_warm"] if name == "ocr_warm_server" else
                  BUDGETS["tray_icon"] if name == "tray icon_window" else None)
        mark = "" if budget is None else f"{budget:.1f} {'ok' if row['median_s'] <= budget else 'OVER'}"
        heavy = ", ".join(row.get("heavy_imports", [])) or ("none" if "heavy_imports" in row else "")
        other = compared.get(name)
        extra = "" if other is None else (f"   | {other['median_s']:.3f} s ({other['cpu_median_s']:.3f} cpu), "
                                          f"exit {other['exit']}, "
                                          + (", ".join(other.get("heavy_imports", [])) or "none"))
        cpu = f"{row['cpu_median_s']:6.3f}" if "cpu_median_s" in row else " " * 6
        print(f"{name:<28} {row['median_s']:>9.3f} {cpu}  {mark:<7} {heavy:<13}{extra}")
        if row.get("engine_total_s") is not None:
            print(f"{'  of which the OCR call':<28} {row['engine_total_s']:>9.3f}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
