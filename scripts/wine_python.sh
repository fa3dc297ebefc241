#!/usr/bin/env bash
# Runs the Windows Python that scripts/setup_wine_python.sh set up, under Wine, with what Wine 8 needs:
#
#   scripts/wine_python.sh -m pytest -q      # any python.exe arguments
#   DOTOCR_WINE_EXE=pythonw.exe scripts/wine_python.sh -m dotocr.tray
#
# Every variable set here is a Wine workaround, not something Windows needs (docs/windows.md):
# - KMP_AFFINITY=disabled: torch's OpenMP aborts with "GetNumaNodeProcessorMaskEx() failed" under Wine.
# - ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16: on CPUs with AMX, oneDNN dies with an illegal instruction under Wine
#   (Linux grants AMX tile data per process, on request, and Windows code never asks; real Windows grants it).
# - stdout and stderr must be pipes or a terminal: the console Python dies in init_sys_streams with
#   "[WinError 6] Invalid handle" when either is a file, so they are then piped through cat.
set -euo pipefail
ROOT="${DOTOCR_WINE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/dotocr-wine}"
EXE="$ROOT/python/${DOTOCR_WINE_EXE:-python.exe}"
if [ ! -f "$EXE" ]; then
    echo "wine_python: $EXE does not exist; run scripts/setup_wine_python.sh first" >&2
    exit 2
fi
export WINEPREFIX="$ROOT/prefix" WINEARCH=win64 WINEDEBUG="${WINEDEBUG:--all}" WINEDLLOVERRIDES="mscoree,mshtml="
export KMP_AFFINITY=disabled ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16
stream_ok() { [ -p "/dev/fd/$1" ] || [ -t "$1" ]; }
if stream_ok 1 && stream_ok 2; then
    exec wine "$EXE" "$@"
fi
wine "$EXE" "$@" 2>&1 | cat
