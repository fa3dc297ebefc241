#!/usr/bin/env bash
# The GPU check (issue 9, item 8): one prepared script for a machine with an NVIDIA GPU, under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # figures on stdout and in $OUT (or benchmarks/out/)
#
# Full-size dots.ocr with random weights (speed and memory do not depend on weight values), written once to
# /tmp. Cases, each in a fresh process through the engine's own loading and preprocessing:
#   - torch decoder, 4-bit NF4, the process capped at 6 GiB with set_per_process_memory_fraction (an RTX 3060
#     stand-in), 1024 px and 2048 px crops;
#   - torch decoder, fp16, uncapped, the same crops;
#   - the hybrid (our vision tower + llama.cpp's decoder) when a CUDA build of llama-cpp-python imports.
# Each reports vision, vision+prefill, decode tok/s and peak CUDA memory (see engine_full_size.py).
# Packages the machine lacks (bitsandbytes, platformdirs, tomli-w) travel as wheels in .whl/ (device README).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
common=(--device cuda --crops 1024x768 2048x1536 --max-image-size 2048 --new-tokens 64 --repeats 1
        --checkpoint /tmp/dotocr-full-size)
timeout 240 python3 benchmarks/engine_full_size.py "${common[@]}" --precisions 4bit --memory-fraction-gib 6 \
    --json "$out/gpu_4bit_6gib.json" 2>&1 | tee "$out/gpu_4bit.log"
timeout 150 python3 benchmarks/engine_full_size.py "${common[@]}" --precisions fp16 \
    --json "$out/gpu_fp16.json" 2>&1 | tee "$out/gpu_fp16.log"
if python3 -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" 2>/dev/null; then
    timeout 150 python3 benchmarks/peer_llamacpp.py --device cuda --crops 1024x768:64 --rounds 1 --no-torch \
        --types q4_k_m --checkpoint /tmp/dotocr-full-size --json "$out/gpu_hybrid.json" 2>&1 | tee "$out/gpu_hybrid.log"
else
    echo "no CUDA build of llama-cpp-python here: the hybrid is not measured" | tee "$out/gpu_hybrid.log"
fi
