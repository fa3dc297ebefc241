"""Intel AMX and llama.cpp: the permission Linux wants before a process touches AMX tile data.

Linux leaves AMX tile data disabled in every process until the process asks for it with
`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; the first AMX instruction of a process that did not ask
dies with SIGILL (oneDNN under Wine hits the same). llama.cpp's AMX weight buffer (one of its "extra" buffer
types, with the repacked ones) runs Q8_0 and Q4 products on AMX tiles. ggml asks for the permission itself when
it creates that buffer type, but our AMX test machine (a Xeon VM) died with SIGILL in its first `tilezero` all
the same, so the llama.cpp decoder kept the extra buffers off on AMX CPUs (docs/performance.md, section 6).

The decoder now asks for the permission itself, from Python, before llama.cpp loads the model and before any of
its threads start, checks with ARCH_GET_XCOMP_PERM that it was granted, and turns the extra buffers back on only
then; where the request fails (an old kernel, a hypervisor without AMX state support, a too small alternate
signal stack: the kernel refuses with ENOSPC) they stay off and the reason is logged. CPUs without AMX keep
llama.cpp's defaults, as before. Whether this removes the crash on that Xeon could not be checked here: the
machines this was written on have no AMX (tests/test_amx.py runs the check where AMX exists).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

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


def extra_buffers_allowed() -> bool:
    """Whether llama.cpp may use its extra (AMX and repacked) weight buffers in this process: everywhere except
    on an AMX CPU whose tile data Linux did not grant. Call before llama.cpp loads a model."""
    if not cpu_has_amx():
        return True
    return request_amx_permission()


def _linux_x86_64() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _arch_prctl(code: int, argument: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(ctypes.c_long(SYS_ARCH_PRCTL), ctypes.c_long(code), ctypes.c_ulong(argument)))


__all__ = ["amx_permitted", "cpu_has_amx", "extra_buffers_allowed", "request_amx_permission"]
