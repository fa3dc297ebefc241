"""Shared measuring tools for the benchmark scripts: peak memory, child processes, medians, the machine.

Peak extra memory on CPU is read from the kernel, not from torch (whose CPU allocator keeps no statistics):
each case runs in a fresh child process started with a fixed glibc mmap threshold, so every tensor above
64 KiB is its own mapping and goes back to the kernel the moment it is freed. Right before the measured call
the child resets its resident-set high-water mark (`/proc/self/clear_refs`, value 5) and reads its current
RSS; afterwards `VmHWM - RSS before` is the most memory the call held at once, to the page (4 KiB).
`calibrate()` checks the method against a tensor of known size.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MIB = 2**20
GIB = 2**30
REPO = Path(__file__).resolve().parents[1]
# Every allocation from 64 KiB up is mmapped and unmapped on free: freed memory never lingers in RSS.
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


class PeakMemory:
    """Context manager: `extra` is the peak resident memory above the RSS at entry, in bytes (Linux only)."""

    def __enter__(self) -> PeakMemory:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        self.before = rss_bytes()
        self.extra = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.extra = _status_kib("VmHWM") * 1024 - self.before


def calibrate(nbytes: int = 256 * MIB) -> float:
    """Measured / true size for one tensor of `nbytes`; ~1.0 means the method sees every allocated page."""
    import torch

    with PeakMemory() as peak:
        t = torch.ones(nbytes // 4, dtype=torch.float32)
        del t
    return peak.extra / nbytes


def available_bytes() -> int:
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M).group(1)) * 1024


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def run_child(script: Path, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run `script --child ARGS` in a fresh interpreter; it prints one JSON object on its last stdout line."""
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": os.pathsep.join(
        filter(None, [os.environ.get("PYTHONPATH", ""), str(REPO)]))}
    proc = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"child exited {proc.returncode}: {' | '.join(tail)[:400]}"}
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPU, cores, RAM, torch, and how busy the machine was."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        found = re.search(r"^Model name:\s+(.+)$", lscpu, re.M)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    total = int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1)) * 1024
    flags = Path("/proc/cpuinfo").read_text()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": round(total / GIB, 1),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {path}", file=sys.stderr)


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:,.0f} MiB"


def page_image(width: int, height: int):
    """A screenshot-like crop: black text lines on white."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for y in range(4, height - 10, 16):
        draw.text((6, y), "Invoice 2024-0117  total 1,234.56 EUR  due 30 days  ref. AB-77 " * 4, fill="black")
    return image
