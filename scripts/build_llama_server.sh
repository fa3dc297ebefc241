#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the llama.cpp that llama-cpp-python vendors, at the version pyproject
# pins, so the server the tests talk to runs the same llama.cpp as our in-process decoder. Built once: the
# binary is cached under a key of that version, the CPU architecture and the CPU's feature flags (the build is
# -march=native), so a second run only prints the path. The path of the binary is the only line on stdout;
# progress goes to stderr.
#
#   scripts/build_llama_server.sh            # prints e.g. ~/.cache/dotocr-build/llama-server-0.3.36-x86_64-1a2b3c4d/llama-server
#   DOTOCR_LLAMA_SERVER=$(scripts/build_llama_server.sh) python -m pytest -q tests/test_llama_server.py
#
# Needs a C++ toolchain and cmake (ninja if present), and PyPI for the source archive. 14 minutes on
# 2 cores the first time (measured on our 2-core machine); a cached run takes milliseconds.
# Environment: PYTHON (default python3), DOTOCR_BUILD_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/dotocr-build),
# LLAMA_CPP_PYTHON_VERSION (default: pyproject's pin).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml | head -n 1)}"
if [ -z "$VERSION" ]; then
    echo "build_llama_server: no llama-cpp-python==X.Y.Z pin in pyproject.toml; set LLAMA_CPP_PYTHON_VERSION" >&2
    exit 1
fi
CACHE="${DOTOCR_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dotocr-build}"
FLAGS_KEY="$( (grep -m 1 '^flags' /proc/cpuinfo 2>/dev/null || uname -a) | sha256sum | cut -c 1-8)"
TARGET_DIR="$CACHE/llama-server-$VERSION-$(uname -m)-$FLAGS_KEY"
BINARY="$TARGET_DIR/llama-server"

if [ -x "$BINARY" ]; then
    echo "$BINARY"
    exit 0
fi

mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "build_llama_server: fetching the llama-cpp-python $VERSION source from PyPI" >&2
"$PYTHON" -m pip download -q "llama-cpp-python==$VERSION" --no-deps --no-binary :all: -d "$CACHE/sdist" >&2
ARCHIVE="$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
tar -xzf "$ARCHIVE" -C "$WORK"
SOURCE="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SOURCE/tools/server/server.cpp" ]; then
    echo "build_llama_server: $ARCHIVE holds no vendor/llama.cpp/tools/server" >&2
    exit 1
fi

GENERATOR=()
if command -v ninja >/dev/null; then
    GENERATOR=(-G Ninja)
fi
echo "build_llama_server: configuring (log: $WORK/configure.log)" >&2
if ! cmake -S "$SOURCE" -B "$WORK/build" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
        -DBUILD_SHARED_LIBS=OFF >"$WORK/configure.log" 2>&1; then
    tail -n 40 "$WORK/configure.log" >&2
    exit 1
fi
echo "build_llama_server: building llama-server on $(nproc) cores" >&2
if ! cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >"$WORK/build.log" 2>&1; then
    tail -n 40 "$WORK/build.log" >&2
    exit 1
fi

mkdir -p "$TARGET_DIR"
cp "$WORK/build/bin/llama-server" "$BINARY.tmp.$$"
mv "$BINARY.tmp.$$" "$BINARY"  # atomic: a reader never sees half a binary
echo "$BINARY"
