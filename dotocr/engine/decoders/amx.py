"""Intel AMX and llama.cpp: the permission Linux wants before a process touches AMX tile data.

Linux leaves AMX tile data disabled in every process until the process asks for it with
`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; the first AMX instruction of a process that did not ask
dies with SIGILL (oneDNN under Wine hits the same). llama.cpp's AMX weight buffer (one of its "extra" buffer
types, with the repacked ones) runs Q8_0 and Q4 products on AMX tiles. ggml asks for the permission itself when
it creates that buffer type, but our AMX test machine (a Xeon VM) died with SIGILL in its first `tilezero` all
the same, so the llama.cpp decoder kept the extra buffers off on AMX CPUs (docs/performance.md, section 6).

The decoder now asks for the permission itself, from Python, before llama.cpp loads the model and before any of
its threads start, and checks with ARCH_GET_XCOMP_PERM that it was granted; where the request fails (an old
kernel, a hypervisor without AMX state support, a too small alternate signal stack: the kernel refuses with
ENOSPC) the buffers stay off and the reason is logged. A granted permission is not proof (ggml asked too, and
the Xeon still died), and a SIGILL would kill the tray or the server with no sentence at all; so before the
buffers go on, a child process loads the same GGUF with them on and decodes a batch and a token. Only if it
exits cleanly do they go on here; the verdict is kept per CPU, kernel and llama.cpp version in the data folder,
so the check costs a few seconds once. CPUs without AMX keep llama.cpp's defaults, as before. Whether the
permission cures the Xeon's crash could not be checked: the machines this was written on have no AMX
(tests/test_amx.py runs where AMX exists).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

from ...config import data_dir
from ...storage import write_atomic

log = logging.getLogger("dotocr.engine.llamacpp")

SYS_ARCH_PRCTL = 158  # x86-64 Linux
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


def cpu_has_amx() -> bool:
    """Whether the CPU reports Intel AMX tiles (Linux only; the desktop CPUs we target have none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            return any(line.startswith("flags") and " amx_tile" in line for line in info)
    except OSError:
        return False


def amx_permitted() -> bool:
    """Whether this process may use AMX tile data now (ARCH_GET_XCOMP_PERM)."""
    if not _linux_x86_64():
        return False
    mask = ctypes.c_uint64(0)
    if _arch_prctl(ARCH_GET_XCOMP_PERM, ctypes.addressof(mask)) != 0:
        return False
    return bool(mask.value & (1 << XFEATURE_XTILEDATA))


def request_amx_permission() -> bool:
    """Ask Linux for AMX tile data in this process (once is enough; it holds for every thread, later ones too).
    True when granted, now or before."""
    if not _linux_x86_64() or not cpu_has_amx():
        return False
    if amx_permitted():
        return True
    if _arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        error = ctypes.get_errno()
        log.info("Linux refused AMX tile data to this process (%s); llama.cpp's AMX buffers stay off.",
                 os.strerror(error) if error else "unknown reason")
        return False
    return amx_permitted()


def extra_buffers_allowed(gguf: Path) -> bool:
    """Whether llama.cpp may use its extra (AMX and repacked) weight buffers for `gguf` in this process: everywhere
    except on an AMX CPU where Linux did not grant tile data or where llama.cpp's tiles were seen to crash a child
    process. Call before llama.cpp loads the model."""
    if not cpu_has_amx():
        return True
    return request_amx_permission() and amx_runs_here(gguf)


PROBE_TIMEOUT_S = 180.0
PROBE = "import sys\nfrom dotocr.engine.decoders.llamacpp import amx_probe\namx_probe(sys.argv[1])\n"
"""What the child runs (a string, not an import: the decoder module imports this one)."""


def amx_runs_here(gguf: Path) -> bool:
    """llama.cpp's AMX kernels, tried in a child process on `gguf` (a crash there costs nothing here); the verdict
    is remembered for this CPU, kernel and llama.cpp version."""
    key = f"{_cpu_name()}|{platform.release()}|{_llamacpp_version()}"
    cache = data_dir() / "llamacpp_amx.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached["key"] == key:
            return bool(cached["runs"])
    log.info("Checking once, in a child process, that llama.cpp's AMX kernels run on this CPU")
    try:
        child = subprocess.run([sys.executable, "-c", PROBE, os.fspath(gguf)], capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        runs = child.returncode == 0 and child.stdout.strip().endswith("amx ok")
        detail = f"exit {child.returncode}" + (" (SIGILL)" if child.returncode in (-4, 132) else "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        runs, detail = False, type(exc).__name__
    if not runs:
        log.warning("llama.cpp's AMX kernels failed in a test process here (%s); its extra buffers stay off.", detail)
    with contextlib.suppress(OSError):
        write_atomic(cache, json.dumps({"key": key, "runs": runs, "detail": detail}))
    return runs


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _llamacpp_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "none"


def _linux_x86_64() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _arch_prctl(code: int, argument: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(code), ctypes.c_ulong(argument)))


__all__ = ["amx_permitted", "amx_runs_here", "cpu_has_amx", "extra_buffers_allowed", "request_amx_permission"]
