"""The torch decoder against the hybrid (our vision tower + the decoder on llama.cpp), full size, side by side.

    python benchmarks/peer_llamacpp.py                       # 400x100 with 32 new tokens, 1024x768 with 256
    python benchmarks/peer_llamacpp.py --rounds 1 --crops 400x100:32
    python benchmarks/peer_llamacpp.py --busy 1 --no-torch --fixed-threads --types q8_0 --crops 400x100:32
                                                             # with another program taking a core

The full-size random checkpoint of `engine_full_size.py` (written once, ~6 GB bf16) stands in for the real one:
speed does not depend on weight values. Its decoder is converted once to Q8_0 and Q4_K_M GGUFs by our writer and
llama.cpp's quantiser (into `--gguf-dir`). Systems, each case in a fresh child process, run in alternating rounds
(torch, Q8_0, Q4_K_M, torch, ...), and the medians over rounds are reported:
- torch bf16: `engine_full_size.py`'s own child (`model.generate` greedy with min_new_tokens), unchanged;
- hybrid Q8_0 / Q4_K_M: `load_llamacpp_decoder`, the same prepared image and prompt ids, eos off so every run
  decodes the same count.
Vision is the tower's forward; prefill is vision end to the first new token; decode is (new tokens - 1) over
first to last token; peak RSS is the resident size after loading plus the peak extra during the call
(measure.py). Every system uses 2 threads.
- llama.cpp's own path ("llama.cpp q8_0 + mmproj bf16", ...): the same GGUF with an mmproj written by our
  `mmproj_export` from the same random weights (BF16: llama.cpp's fastest vision on CPU), run by llama.cpp's
  libmtmd as `llama-server`/`llama-mtmd-cli` run it (mtmd tokenize, encode, image chunk decode), with llama.cpp's
  default context settings, greedy, eos off. It is given the engine's own canvas (the prepared image, sides
  multiples of 28), so neither side resizes; the image-token counts of both sides are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
    from dotocr.engine.decoders.speculation import Drafter
    from dotocr.engine.inputs.preprocessing import ImagePreparer
    from dotocr.engine.inputs.prompts import encode_prompt, instruction_for
    from dotocr.engine.plan import LoadPlan

    torch.set_num_threads(THREADS)
    folder = Path(args.checkpoint)
    started = time.perf_counter()
    plan = LoadPlan(args.device, "fp16" if args.device == "cuda" else "bf16", "benchmark", decoder="llamacpp",
                    gguf_type=args.gguf_type)
    decoder = load_llamacpp_decoder(folder, plan, n_threads=THREADS, gguf_dir=Path(args.gguf_dir),
                                    tune_threads=not args.fixed_threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    preparer = ImagePreparer.from_pretrained(folder)
    # llama.cpp memory-maps the GGUF: page every weight in with a short text prompt first, as the torch child
    # touches its weights, so neither the timings nor the resident size mix loading with inference.
    decoder.generate(DecodeRequest([1, 2, 3, 4], None, None, 1000, 2), lambda token, probability: False)
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

    def on_token(token: int, probability: float) -> bool:
        times.append(time.perf_counter())
        return False

    drafter = Drafter(costs=decoder.batch_costs) if args.speculate else None
    request = DecodeRequest(ids, prepared.pixel_values, prepared.grid_thw, 1000, args.new_tokens, drafter=drafter)
    with PeakMemory() as peak:
        begin = time.perf_counter()
        out = decoder.generate(request, on_token)
        finish = time.perf_counter()
    decoder.close()
    name = f"hybrid {args.gguf_type}{' fixed threads' if args.fixed_threads else ''}"
    name += " speculate" if args.speculate else ""
    return {"system": name, "crop": args.crop, "image_tokens": prepared.image_tokens,
            "prompt_tokens": len(ids), "generated": len(out), "load_s": round(load_s, 2),
            "vision_s": marks["vision_end"] - marks["vision_start"],
            "prefill_s": times[0] - marks["vision_end"],
            "decode_tok_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
            "total_s": finish - begin, "peak_rss_bytes": rss_loaded + peak.extra,
            "draft_tokens": drafter.draft_tokens if drafter else 0,
            "accepted_tokens": drafter.accepted_tokens if drafter else 0, "tokens": out}


def own_child(args: argparse.Namespace) -> dict:
    """llama.cpp's own multimodal path through libmtmd: its vision encoder, its image chunk decode, its decoder."""
    import ctypes

    import llama_cpp as llama
    import llama_cpp.mtmd_cpp as mtmd
    import numpy as np

    from dotocr.engine.decoders.amx import extra_buffers_allowed
    from dotocr.engine.inputs.preprocessing import ImagePreparer
    from dotocr.engine.inputs.prompts import ASSISTANT, END_USER, USER, instruction_for

    folder = Path(args.checkpoint)
    started = time.perf_counter()
    llama.llama_backend_init()
    model_params = llama.llama_model_default_params()
    model_params.n_gpu_layers = -1 if args.device == "cuda" else 0
    model_params.use_extra_bufts = extra_buffers_allowed(Path(args.text_gguf))  # as our decoder: AMX only once checked
    model = llama.llama_model_load_from_file(os.fsencode(args.text_gguf), model_params)
    params = llama.llama_context_default_params()
    params.n_ctx = 8192
    params.n_threads = params.n_threads_batch = THREADS
    ctx = llama.llama_init_from_model(model, params)
    mparams = mtmd.mtmd_context_params_default()
    mparams.use_gpu = args.device == "cuda"
    mparams.n_threads = THREADS
    mparams.print_timings = False
    mctx = mtmd.mtmd_init_from_file(os.fsencode(args.mmproj), model, mparams)
    if not model or not ctx or not mctx:
        return {"error": "llama.cpp could not load the GGUF or the mmproj"}
    vocab = llama.llama_model_get_vocab(model)
    n_vocab = llama.llama_vocab_n_tokens(vocab)
    warm = (llama.llama_token * 4)(1, 2, 3, 4)  # page the decoder's weights in, as the other children do
    llama.llama_decode(ctx, llama.llama_batch_get_one(warm, 4))
    llama.llama_memory_clear(llama.llama_get_memory(ctx), True)
    load_s = time.perf_counter() - started
    rss_loaded = rss_bytes()

    width, height = (int(v) for v in args.crop.split("x"))
    canvas = ImagePreparer.from_pretrained(folder).prepare(page_image(width, height), args.max_image_size).image
    pixels = np.asarray(canvas.convert("RGB"), dtype=np.uint8)
    bitmap = mtmd.mtmd_bitmap_init(canvas.width, canvas.height,
                                   (ctypes.c_uint8 * pixels.size).from_buffer_copy(pixels.tobytes()))
    prompt = (USER + mtmd.mtmd_default_marker().decode() + instruction_for("text") + END_USER + ASSISTANT).encode()
    text = mtmd.mtmd_input_text()
    text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), False, True
    chunks = mtmd.mtmd_input_chunks_init()
    if mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) != 0:
        return {"error": "mtmd_tokenize failed"}

    times: list[float] = []
    with PeakMemory() as peak:
        begin = time.perf_counter()
        n_past = llama.llama_pos(0)
        image_tokens = prompt_tokens = 0
        vision_s = 0.0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            last = i == mtmd.mtmd_input_chunks_size(chunks) - 1
            prompt_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            new_past = llama.llama_pos(0)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                image_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                mark = time.perf_counter()
                if mtmd.mtmd_encode_chunk(mctx, chunk) != 0:
                    return {"error": "mtmd_encode_chunk failed"}
                vision_s += time.perf_counter() - mark
                code = mtmd.mtmd_helper_decode_image_chunk(mctx, ctx, chunk, mtmd.mtmd_get_output_embd(mctx),
                                                           n_past, 0, params.n_batch, ctypes.byref(new_past),
                                                           mtmd.mtmd_helper_post_decode_callback(), None)
            else:
                code = mtmd.mtmd_helper_eval_chunk_single(mctx, ctx, chunk, n_past, 0, params.n_batch, last,
                                                          ctypes.byref(new_past))
            if code != 0:
                return {"error": f"llama.cpp could not decode chunk {i} (code {code})"}
            n_past = new_past
        for _ in range(args.new_tokens):  # greedy, eos off: every run decodes the same count
            logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
            token = (llama.llama_token * 1)(int(logits.argmax()))
            times.append(time.perf_counter())
            if len(times) == args.new_tokens:
                break
            if llama.llama_decode(ctx, llama.llama_batch_get_one(token, 1)) != 0:
                return {"error": "llama_decode failed"}
        finish = time.perf_counter()
    mtmd.mtmd_input_chunks_free(chunks)
    mtmd.mtmd_bitmap_free(bitmap)
    mtmd.mtmd_free(mctx)
    llama.llama_free(ctx)
    llama.llama_model_free(model)
    return {"system": args.system, "crop": args.crop, "image_tokens": image_tokens, "prompt_tokens": prompt_tokens,
            "generated": len(times), "load_s": round(load_s, 2), "vision_s": vision_s,
            "prefill_s": times[0] - begin - vision_s,
            "decode_tok_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
            "total_s": finish - begin, "peak_rss_bytes": rss_loaded + peak.extra}


def torch_case(folder: Path, crop: str, new_tokens: int, max_image_size: int, device: str) -> dict:
    case = run_child(HERE / "engine_full_size.py", [
        "--device", device, "--precisions", "fp16" if device == "cuda" else "bf16", "--crop", crop,
        "--new-tokens", str(new_tokens),
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
    parser.add_argument("--own", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--text-gguf", help=argparse.SUPPRESS)
    parser.add_argument("--mmproj", help=argparse.SUPPRESS)
    parser.add_argument("--mmproj-type", default="bf16", help="the mmproj of llama.cpp's own path")
    parser.add_argument("--no-own", action="store_true", help="skip llama.cpp's own path")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch decoder")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: vision in fp16 on the GPU and llama.cpp offloaded (needs a CUDA llama-cpp-python)")
    parser.add_argument("--fixed-threads", action="store_true",
                        help="also run the hybrid with its decode thread count fixed at 2 (no ThreadTuner)")
    parser.add_argument("--speculate", action="store_true",
                        help="also run the hybrid with speculative decoding on (issue 19), alternating with it off")
    parser.add_argument("--busy", type=int, default=0,
                        help="keep this many busy-looping processes running throughout, as other programs would")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(own_child(args) if args.own else child(args)))
        return

    os.environ.setdefault("DOTOCR_DATA_DIR", tempfile.mkdtemp(prefix="dotocr-bench-"))
    folder = write_checkpoint(Path(args.checkpoint))
    from dotocr.engine.gguf.convert import ensure_gguf, ensure_mmproj

    # Converted before any timing, once; the F16 file is kept so both quantisations start from it.
    for gguf_type in ["f16", *args.types]:
        started = time.perf_counter()
        path = ensure_gguf(folder, gguf_type, directory=Path(args.gguf_dir), n_threads=os.cpu_count())
        print(f"# {gguf_type}: {path} ({path.stat().st_size / GIB:.2f} GiB, {time.perf_counter() - started:.0f} s)",
              flush=True)
    mmproj = None if args.no_own else ensure_mmproj(folder, args.mmproj_type, directory=Path(args.gguf_dir))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        run_rounds(args, folder, mmproj, busy)
    finally:
        for process in busy:
            process.kill()


def run_rounds(args: argparse.Namespace, folder: Path, mmproj: Path | None, busy: list) -> None:
    from dotocr.engine.gguf.convert import ensure_gguf

    report = {"machine": machine(), "checkpoint": str(folder), "busy_processes": len(busy), "cases": []}
    print(f"# {report['machine']}", flush=True)
    systems = [] if args.no_torch else ["torch bf16"]
    systems += [f"hybrid {t}" for t in args.types]
    if args.fixed_threads:
        systems += [f"hybrid {t} fixed threads" for t in args.types]
    if args.speculate:
        systems += [f"hybrid {t} speculate" for t in args.types]
    if mmproj is not None:
        systems += [f"llama.cpp {t} + mmproj {args.mmproj_type}" for t in args.types]
    for round_no in range(args.rounds):
        for spec in args.crops:
            crop, new_tokens = spec.split(":")
            for system in systems:
                if system == "torch bf16":
                    case = torch_case(folder, crop, int(new_tokens), args.max_image_size, args.device)
                elif system.startswith("llama.cpp"):
                    text_gguf = ensure_gguf(folder, system.split()[1], directory=Path(args.gguf_dir))
                    case = run_child(Path(__file__), [
                        "--own", "--system", system, "--crop", crop, "--new-tokens", new_tokens,
                        "--checkpoint", str(folder), "--text-gguf", str(text_gguf), "--mmproj", str(mmproj),
                        "--max-image-size", str(args.max_image_size), "--device", args.device], timeout=3600)
                    case.setdefault("system", system)
                    case.setdefault("crop", crop)
                else:
                    case = run_child(Path(__file__), [
                        "--crop", crop, "--new-tokens", new_tokens, "--gguf-type", system.split()[1],
                        "--checkpoint", str(folder), "--gguf-dir", args.gguf_dir,
                        "--max-image-size", str(args.max_image_size), "--device", args.device,
                        *(["--fixed-threads"] if system.endswith("fixed threads") else []),
                        *(["--speculate"] if system.endswith("speculate") else [])], timeout=3600)
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
