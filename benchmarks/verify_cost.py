"""What checking a draft costs: one decoder step over k + 1 tokens against one token, full size, both decoders.

    python benchmarks/verify_cost.py --json benchmarks/results/verify_cost.json
    python benchmarks/verify_cost.py --systems q8_0 --rounds 12

Speculative decoding pays only where verifying k drafted tokens (fed with the token before them, logits at every
row) costs little more than one plain step. This measures the decoders' own `feed` calls, as the token loop
makes them, on the full-size random-weight model of `engine_full_size.py` (speed does not depend on weight
values): after a context of `--context` text tokens, a feed of n tokens, then the rewind that removes them
again (llama.cpp: `llama_memory_seq_rm`; torch: `DynamicCache.crop`), so every feed starts from the same cache.
Sizes alternate within each round (ascending, then descending) and the cost of n is the median over rounds of
t(n) / t(1) from the same round, so load from other jobs hits both alike. Systems run one after another, each in
its own child process: torch bf16 (our torch decoder, `VectorLinear` on) and the llama.cpp decoder at the GGUF
types given (the GGUFs `peer_llamacpp.py` writes).

It also checks what batching does to the numbers: each batch's rows against the same tokens fed one at a time
(max |logit difference| and whether the argmax moved), since the greedy tokens of speculative decoding equal
plain decoding's only if those agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_full_size import write_checkpoint  # noqa: E402
from measure import machine, median, run_child, write_json  # noqa: E402

THREADS = 2
SIZES = (1, 2, 3, 4, 5, 7, 9)


def torch_feeder(folder: Path, context: list[int]):
    import torch
    from transformers import DynamicCache

    from dotocr.engine.decoders.torch_decoder import TorchDecoder, _rows
    from dotocr.engine.loading import load_checkpoint
    from dotocr.engine.plan import LoadPlan

    loaded = load_checkpoint(folder, LoadPlan("cpu", "bf16", "benchmark"))
    decoder: TorchDecoder = loaded.decoder
    model = decoder.model
    for parameter in model.parameters():  # memory-mapped bf16 weights: read them all in before timing
        parameter.data.sum()
    cache = DynamicCache(config=model.config)
    torch.set_grad_enabled(False)
    with torch.inference_mode():
        model(input_ids=torch.tensor([context]), cache=cache, use_cache=True, logits_to_keep=1)

    def feed(tokens: list[int]):
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([tokens]), cache=cache, use_cache=True, logits_to_keep=len(tokens))
        return _rows(out.logits)

    return feed, lambda count: cache.crop(-count)


def llama_feeder(gguf: Path, gguf_type: str, context: list[int]):
    from dotocr.engine.decoders.llamacpp import LlamaCppDecoder

    decoder = LlamaCppDecoder(gguf, None, gguf_type=gguf_type, n_threads=THREADS, tune_threads=False)
    decoder._start(len(context) + 64)
    decoder._decode_tokens(context, 0, [False] * (len(context) - 1) + [True])
    position = len(context)

    def feed(tokens: list[int]):
        nonlocal position
        rows = decoder._decode_tokens(tokens, position, [True] * len(tokens))
        position += len(tokens)
        return rows

    def rewind(count: int) -> None:
        nonlocal position
        position -= count
        decoder._forget_from(position)

    return feed, rewind


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    context = rng.integers(0, 1000, args.context).tolist()
    if args.system == "torch bf16":
        feed, rewind = torch_feeder(Path(args.checkpoint), context)
    else:
        feed, rewind = llama_feeder(Path(args.gguf), args.system.split()[-1], context)
    probe = rng.integers(0, 1000, max(SIZES)).tolist()
    singles = [feed([token])[0] for token in probe]  # the same tokens one at a time: what batches must match
    rewind(len(probe))
    agreement = {}
    for size in SIZES[1:]:
        rows = feed(probe[:size])
        rewind(size)
        single = np.stack(singles[:size])
        agreement[size] = {"max_abs_diff": float(np.abs(rows - single).max()),
                           "argmax_moved": int((rows.argmax(-1) != single.argmax(-1)).sum())}
    feed(probe[:1])  # warm
    rewind(1)
    seconds: dict[int, list[float]] = {size: [] for size in SIZES}
    for round_no in range(args.rounds):
        for size in (SIZES if round_no % 2 == 0 else SIZES[::-1]):
            tokens = rng.integers(0, 1000, size).tolist()
            started = time.perf_counter()
            feed(tokens)
            seconds[size].append(time.perf_counter() - started)
            rewind(size)
    ratios = {size: [t / one for t, one in zip(seconds[size], seconds[1], strict=True)] for size in SIZES}
    return {"system": args.system, "context": args.context, "rounds": args.rounds,
            "seconds": {str(k): v for k, v in seconds.items()},
            "median_seconds": {str(k): median(v) for k, v in seconds.items()},
            "cost": {str(k): round(median(v), 3) for k, v in ratios.items()},
            "batched_vs_single": {str(k): v for k, v in agreement.items()},
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["torch bf16", "llamacpp q8_0", "llamacpp q4_k_m"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--checkpoint", default=str(Path(tempfile.gettempdir()) / "dotocr-benchmark-full-size"))
    parser.add_argument("--gguf-dir", default=str(Path(tempfile.gettempdir()) / "dotocr-benchmark-gguf"))
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    os.environ.setdefault("DOTOCR_DATA_DIR", tempfile.mkdtemp(prefix="dotocr-bench-"))
    folder = write_checkpoint(Path(args.checkpoint))
    from dotocr.engine.gguf.convert import ensure_gguf

    report = {"machine": machine(), "sizes": SIZES, "cases": []}
    print(f"# {report['machine']}", flush=True)
    for system in args.systems:
        extra = []
        if system.startswith("llamacpp"):
            gguf = ensure_gguf(folder, system.split()[-1], directory=Path(args.gguf_dir), n_threads=os.cpu_count())
            extra = ["--gguf", str(gguf)]
        case = run_child(Path(__file__), ["--system", system, "--rounds", str(args.rounds), "--context",
                                          str(args.context), "--checkpoint", str(folder), *extra], timeout=3600)
        case.setdefault("system", system)
        report["cases"].append(case)
        print(json.dumps({k: case.get(k) for k in ("system", "cost", "median_seconds", "load_average")}),
              flush=True)
        write_json(args.json, report)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.json, report)
    print("\n| system | " + " | ".join(f"{n} tokens" for n in SIZES) + " | one token |")
    print("|---|" + "---|" * (len(SIZES) + 1))
    for case in report["cases"]:
        if "cost" not in case:
            print(f"| {case['system']} | failed: {case.get('error', '?')} |")
            continue
        cells = " | ".join(f"{case['cost'][str(n)]:.2f}x" for n in SIZES)
        print(f"| {case['system']} | {cells} | {case['median_seconds']['1'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
