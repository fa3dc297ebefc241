"""The torch decoder against the hybrid (our vision tower + the decoder on llama.cpp), full size, side by side.

    python benchmarks/peer_llamacpp.py                       # 400x100 with 32 new tokens, 1024x768 with 256
    python benchmarks/peer_llamacpp.py --rounds 1 --crops 400x100:32

The full-size random checkpoint of `engine_full_size.py` (written once, ~6 GB bf16) stands in for the real one:
speed does not depend on weight values. Its decoder is converted once to Q8_0 and Q4_K_M GGUFs by our writer and
llama.cpp's quantiser (into `--gguf-dir`). Systems, each case in a fresh child process, run in alternating rounds
(torch, Q8_0, Q4_K_M, torch, ...), and the medians over rounds are reported:
- torch bf16: `engine_full_size.py`'s own child (`model.generate` greedy with min_new_tokens), unchanged;
- hybrid Q8_0 / Q4_K_M: `load_llamacpp_decoder`, the same prepared image and prompt ids, eos off so every run
  decodes the same count.
Vision is the tower's forward; prefill is vision end to the first new token; decode is (new tokens - 1) over
first to last token; peak RSS is the resident size after loading plus the peak extra during the call
(measure.py). Every system uses 2 threads. llama.cpp's own path (its dots_ocr mmproj) is not measured here: it
needs an mmproj writer for the vision tower, which this project does not have yet.
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
from measure import GIB, PeakMemory, machine, median, page_image, rss_bytes, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
THREADS = 2


def child(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoTokenizer

    from dotocr.engine.decoders.base import DecodeRequest
    from dotocr.engine.decoders.llamacpp import load_llamacpp_decoder
    from dotocr.engine.preprocessing import ImagePreparer
    from dotocr.engine.prompts import encode_prompt, instruction_for

    torch.set_num_threads(THREADS)
    folder = Path(args.checkpoint)
    started = time.perf_counter()
    decoder = load_llamacpp_decoder(folder, precision="bf16", gguf_type=args.gguf_type, n_threads=THREADS,
                                    gguf_dir=Path(args.gguf_dir))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    preparer = ImagePreparer.from_pretrained(folder)
    # llama.cpp memory-maps the GGUF: page every weight in with a short text prompt first, as the torch child
    # touches its weights, so neither the timings nor the resident size mix loading with inference.
    decoder.generate(DecodeRequest([1, 2, 3, 4], None, None, 1000, 2), lambda token: False)
    load_s = time.perf_counter() - started
    rss_loaded = rss_bytes()

    width, height = (int(v) for v in args.crop.split("x"))
    prepared = preparer.prepare(page_image(width, height), args.max_image_size)
    ids = encode_prompt(tokenizer, instruction_for("text"), prepared.image_tokens)
    marks: dict[str, float] = {}
    tower = decoder.vision_tower
    tower.register_forward_pre_hook(lambda *_: marks.__setitem__("vision_start", time.perf_counter()))
    tower.register_forward_hook(lambda *_: marks.__setitem__("vision_end", time.perf_counter()))
    times: list[float] = []

    def on_token(token: int) -> bool:
        times.append(time.perf_counter())
        return False

    request = DecodeRequest(ids, prepared.pixel_values, prepared.grid_thw, 1000, args.new_tokens)
    with PeakMemory() as peak:
        begin = time.perf_counter()
        out = decoder.generate(request, on_token)
        finish = time.perf_counter()
    decoder.close()
    return {"system": f"hybrid {args.gguf_type}", "crop": args.crop, "image_tokens": prepared.image_tokens,
            "prompt_tokens": len(ids), "generated": len(out), "load_s": round(load_s, 2),
            "vision_s": marks["vision_end"] - marks["vision_start"],
            "prefill_s": times[0] - marks["vision_end"],
            "decode_tok_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
            "total_s": finish - begin, "peak_rss_bytes": rss_loaded + peak.extra}


def torch_case(folder: Path, crop: str, new_tokens: int, max_image_size: int) -> dict:
    case = run_child(HERE / "engine_full_size.py", [
        "--device", "cpu", "--precisions", "bf16", "--crop", crop, "--new-tokens", str(new_tokens),
        "--repeats", "1", "--max-image-size", str(max_image_size), "--checkpoint", str(folder)], timeout=3600)
    if "error" in case:
        return {"system": "torch bf16", "crop": crop, **case}
    return {"system": "torch bf16", "crop": crop, "image_tokens": case["image_tokens"],
            "prompt_tokens": case["prompt_tokens"], "generated": case["runs"][0]["generated"],
            "load_s": case["load_resident_s"], "vision_s": case["vision_s"],
            "prefill_s": case["vision_prefill_s"] - case["vision_s"], "decode_tok_s": case["decode_tok_s"],
            "total_s": case["total_s"], "peak_rss_bytes": case["rss_after_load_bytes"] + case["peak_extra_bytes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", nargs="+", default=["400x100:32", "1024x768:256"],
                        help="WIDTHxHEIGHT:NEW_TOKENS")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--types", nargs="+", default=["q8_0", "q4_k_m"])
    parser.add_argument("--max-image-size", type=int, default=2048)
    parser.add_argument("--checkpoint", default=str(Path(tempfile.gettempdir()) / "dotocr-benchmark-full-size"))
    parser.add_argument("--gguf-dir", default=str(Path(tempfile.gettempdir()) / "dotocr-benchmark-gguf"))
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--crop", help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--gguf-type", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    os.environ.setdefault("DOTOCR_DATA_DIR", tempfile.mkdtemp(prefix="dotocr-bench-"))
    folder = write_checkpoint(Path(args.checkpoint))
    from dotocr.engine.gguf_export import ensure_gguf

    # Converted before any timing, once; the F16 file is kept so both quantisations start from it.
    for gguf_type in ["f16", *args.types]:
        started = time.perf_counter()
        path = ensure_gguf(folder, gguf_type, directory=Path(args.gguf_dir), n_threads=THREADS)
        print(f"# {gguf_type}: {path} ({path.stat().st_size / GIB:.2f} GiB, {time.perf_counter() - started:.0f} s)",
              flush=True)
    report = {"machine": machine(), "checkpoint": str(folder), "cases": []}
    print(f"# {report['machine']}", flush=True)
    systems = ["torch bf16", *[f"hybrid {t}" for t in args.types]]
    for round_no in range(args.rounds):
        for spec in args.crops:
            crop, new_tokens = spec.split(":")
            for system in systems:
                if system == "torch bf16":
                    case = torch_case(folder, crop, int(new_tokens), args.max_image_size)
                else:
                    case = run_child(Path(__file__), [
                        "--crop", crop, "--new-tokens", new_tokens, "--gguf-type", system.split()[1],
                        "--checkpoint", str(folder), "--gguf-dir", args.gguf_dir,
                        "--max-image-size", str(args.max_image_size)], timeout=3600)
                    case.setdefault("system", system)
                    case.setdefault("crop", crop)
                case["round"] = round_no
                case["load_average"] = [round(x, 2) for x in os.getloadavg()]
                report["cases"].append(case)
                print(json.dumps(case), flush=True)
                write_json(args.json, report)

    print("\n| crop (image tokens) | system | vision | prefill | decode | vision + prefill + N tokens | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.crops:
        crop, new_tokens = spec.split(":")
        for system in systems:
            runs = [c for c in report["cases"] if c["crop"] == crop and c["system"] == system and "error" not in c]
            if not runs:
                print(f"| {crop} | {system} | failed | | | | |")
                continue
            med = {k: median([r[k] for r in runs]) for k in ("vision_s", "prefill_s", "decode_tok_s", "total_s")}
            peak = max(r["peak_rss_bytes"] for r in runs)
            print(f"| {crop} ({runs[0]['image_tokens']}) | {system} | {med['vision_s']:.2f} s | "
                  f"{med['prefill_s']:.2f} s | {med['decode_tok_s']:.1f} tok/s | {med['total_s']:.1f} s "
                  f"({new_tokens} tokens) | {peak / GIB:.2f} GiB |")
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.json, report)


if __name__ == "__main__":
    main()
