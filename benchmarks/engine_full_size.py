"""The full-size dots.ocr architecture with random weights: load time, vision+prefill, decode speed, memory.

    python benchmarks/engine_full_size.py                                   # CPU, what the user would get
    python benchmarks/engine_full_size.py --crops 400x100 --precisions bf16 fp32
    python benchmarks/engine_full_size.py --device cuda --precision 4bit --memory-fraction-gib 6

Speed and memory do not depend on weight values, so a random-weight checkpoint with the real dimensions
(`DotsOCRConfig()` defaults: 28-layer 1.5B decoder, vocabulary 151936, 42-layer vision tower) stands in for
the real one; nothing is downloaded. It is written once (bf16 safetensors, ~6 GB) to `--checkpoint` with the
golden fixture's tokenizer, preprocessor and generation configs. That tokenizer is the tiny one (1024 ids, its
`<|imgpad|>` is 1000), so the folder's config keeps every real dimension, vocabulary size included, and only
sets `image_token_id` to 1000 (and `video_token_id` to 991) so the prompt's image slots and the model agree.

Each case runs in a fresh child process through the engine's own pieces: `plan_load` (for `auto`),
`load_checkpoint`, `ImagePreparer.prepare` and `encode_prompt`, then `model.generate` greedy with
`min_new_tokens = max_new_tokens`, so eos cannot end it early and every run decodes the same count.
- load: seconds in `load_checkpoint` (the checkpoint is in the page cache after the first case), and until
  every weight is resident (a load in the file's own dtype, bf16, memory-maps the weights; they are read in
  before the first run so that neither its timing nor the memory figures mix loading with inference).
- vision / vision+prefill: forward hooks on the vision tower, and the arrival of the first new token.
- decode: (new tokens - 1) / (last token time - first token time).
- memory (CPU): resident bytes after loading, and the peak extra during generate (measure.py explains how);
  (CUDA): torch's max allocated and reserved bytes, under `set_per_process_memory_fraction`.
Every precision runs the first crop, to compare them side by side; the other crops run in the first
precision only, to keep the CPU run short.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import GIB, MIB, REPO, PeakMemory, machine, median, page_image, rss_bytes, run_child, write_json  # noqa: E402

FIXTURE = REPO / "tests" / "data" / "dots_tiny"
FIXTURE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "preprocessor_config.json", "generation_config.json")
TINY_TOKENIZER_IDS = {"image_token_id": 1000, "video_token_id": 991}
STAMP = "dotocr-benchmark.json"


def write_checkpoint(folder: Path) -> Path:
    """Random full-size weights plus the fixture's tokenizer files; reused when already there."""
    import torch

    from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM

    stamp = {"config": TINY_TOKENIZER_IDS, "torch": torch.__version__}
    if (folder / STAMP).exists() and json.loads((folder / STAMP).read_text()) == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    print(f"writing a random full-size checkpoint to {folder} (once)", file=sys.stderr, flush=True)
    config = DotsOCRConfig(**TINY_TOKENIZER_IDS)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 6 GB in RAM instead of 12
    try:
        model = DotsOCRForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    del model
    for name in FIXTURE_FILES:
        shutil.copy(FIXTURE / name, folder / name)
    (folder / STAMP).write_text(json.dumps(stamp))
    return folder


class TokenClock:
    """A generate() streamer that notes when each new token arrives (the first put is the prompt)."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def child(args: argparse.Namespace) -> dict:
    import torch

    from dotocr.config import Settings
    from dotocr.engine.inputs.prompts import encode_prompt, instruction_for
    from dotocr.engine.loading import load_checkpoint
    from dotocr.engine.plan import LoadPlan, plan_load

    cuda = args.device == "cuda"
    if cuda and args.memory_fraction_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_fraction_gib * GIB / total))
    if args.precision == "auto":
        plan = plan_load(Settings(device=args.device, precision="auto", decoder="torch"))
    else:
        plan = LoadPlan(args.device, args.precision, "benchmark")
    started = time.perf_counter()
    loaded = load_checkpoint(Path(args.checkpoint), plan)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    load_s = time.perf_counter() - started
    model = loaded.decoder.model
    # Weights loaded in the checkpoint's own dtype stay memory-mapped and are read on first use; touch them
    # all now, so the resident size counts them and the first run does not pay for reading them.
    with torch.inference_mode():
        for param in model.parameters():
            param.sum()
    sync()
    resident_s = time.perf_counter() - started
    rss_loaded = rss_bytes()

    width, height = (int(v) for v in args.crop.split("x"))
    prepared = loaded.preparer.prepare(page_image(width, height), args.max_image_size)
    ids = encode_prompt(loaded.tokenizer, instruction_for("text"), prepared.image_tokens)
    input_ids = torch.tensor([ids], device=plan.device)
    pixel_values = prepared.pixel_values.to(plan.device)
    grid = prepared.grid_thw.to(plan.device)

    marks: dict[str, float] = {}
    def mark(name: str):
        def hook(*_) -> None:
            sync()
            marks[name] = time.perf_counter()
        return hook

    model.vision_tower.register_forward_pre_hook(mark("vision_start"))
    model.vision_tower.register_forward_hook(mark("vision_end"))

    runs = []
    for _ in range(args.repeats):
        clock = TokenClock(sync)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode(), PeakMemory() as peak:
            begin = time.perf_counter()
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                 pixel_values=pixel_values, image_grid_thw=grid,
                                 max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=False, eos_token_id=loaded.eos_token_ids,
                                 pad_token_id=loaded.eos_token_ids[0], streamer=clock)
            sync()
            finish = time.perf_counter()
        generated = out.shape[1] - len(ids)
        t = clock.times
        run = {"vision_s": marks["vision_end"] - marks["vision_start"], "vision_prefill_s": t[0] - begin,
               "decode_tok_s": (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else None,
               "total_s": finish - begin, "generated": generated, "peak_extra_bytes": peak.extra}
        if cuda:
            run["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
            run["cuda_max_reserved"] = torch.cuda.max_memory_reserved()
        runs.append(run)
    keys = ("vision_s", "vision_prefill_s", "decode_tok_s", "total_s")
    summary = {key: median([r[key] for r in runs]) for key in keys}
    return {"device": plan.device, "precision": plan.precision, "plan_reason": plan.reason, "crop": args.crop,
            "model_input": list(prepared.image.size), "image_tokens": prepared.image_tokens,
            "prompt_tokens": len(ids), "new_tokens": args.new_tokens, "load_s": round(load_s, 2),
            "load_resident_s": round(resident_s, 2),
            "rss_after_load_bytes": rss_loaded, "peak_extra_bytes": max(r["peak_extra_bytes"] for r in runs),
            **{k: round(v, 3) for k, v in summary.items()}, "runs": runs,
            "threads": torch.get_num_threads(),
            "cuda_max_allocated": max((r.get("cuda_max_allocated", 0) for r in runs), default=0) or None,
            "cuda_max_reserved": max((r.get("cuda_max_reserved", 0) for r in runs), default=0) or None}


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        sys.exit(f"--device cuda needs an NVIDIA GPU that PyTorch can see; this PyTorch "
                 f"({torch.__version__}, {build}) sees none. Run it on a CUDA machine, or use --device cpu.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precisions", nargs="+", default=None,
                        help="auto, 4bit, fp16, bf16, fp32 (default: cpu: auto fp32 bf16 minus duplicates; "
                             "cuda: 4bit)")
    parser.add_argument("--precision", dest="precisions", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--crops", nargs="+", default=["400x100", "1024x768", "1536x1536"])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=0,
                        help="runs per case (default: 3 for the first crop, 1 for the others)")
    parser.add_argument("--max-image-size", type=int, default=2048, help="large enough to keep 1536 px")
    parser.add_argument("--memory-fraction-gib", type=float, default=0.0,
                        help="CUDA only: cap this process at this many GiB (6 = an RTX 3060)")
    parser.add_argument("--checkpoint",
                        default=str(Path(tempfile.gettempdir()) / "dotocr-benchmark-full-size"))
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--crop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        require_cuda()
    if args.child:
        args.precision = args.precisions[0]
        print(json.dumps(child(args)))
        return

    os.environ.setdefault("DOTOCR_DATA_DIR", tempfile.mkdtemp(prefix="dotocr-bench-"))  # fresh bf16 probe
    precisions = args.precisions or (["4bit"] if args.device == "cuda" else ["auto", "bf16", "fp32"])
    probe = None
    if args.device == "cpu":  # what plan_load's own probe picks on this machine, for the record
        from dotocr.config import data_dir
        from dotocr.engine.plan import cpu_prefers_bf16

        picked = "bf16" if cpu_prefers_bf16() else "fp32"
        probe = json.loads((data_dir() / "cpu_precision.json").read_text())
        if "auto" in precisions:
            precisions = ["auto", *[p for p in precisions if p not in ("auto", picked)]]
    folder = write_checkpoint(Path(args.checkpoint))
    report = {"machine": machine(), "checkpoint": str(folder), "plan_load_probe": probe, "cases": []}
    print(f"# {report['machine']}\n# plan_load's bf16 probe: {probe}", flush=True)
    print(f"{'crop':>9} {'prec':5} {'tokens':>6} {'load/resident s':>15} {'vision s':>8} {'vis+pre s':>9} "
          f"{'dec tok/s':>9} {'weights RSS':>11} {'peak extra':>10}", flush=True)
    plan = [(args.crops[0], p) for p in precisions] + [(c, precisions[0]) for c in args.crops[1:]]
    for crop, precision in plan:
        repeats = args.repeats or (3 if crop == args.crops[0] else 1)
        case = run_child(Path(__file__), [
            "--device", args.device, "--precisions", precision, "--crop", crop,
            "--new-tokens", str(args.new_tokens), "--repeats", str(repeats),
            "--max-image-size", str(args.max_image_size), "--checkpoint", str(folder),
            "--memory-fraction-gib", str(args.memory_fraction_gib)], timeout=3600)
        case.setdefault("crop", crop)
        case.setdefault("requested_precision", precision)
        report["cases"].append(case)
        if "error" in case:
            print(f"{crop:>9} {precision:5} {case['error']}", flush=True)
            continue
        if args.device == "cpu":
            memory = (f"{case['rss_after_load_bytes'] / GIB:9.2f} GiB "
                      f"{case['peak_extra_bytes'] / MIB:7,.0f} MiB")
        else:
            memory = (f"alloc {case['cuda_max_allocated'] / GIB:.2f} GiB "
                      f"reserved {case['cuda_max_reserved'] / GIB:.2f} GiB")
        print(f"{crop:>9} {case['precision']:5} {case['image_tokens']:6} "
              f"{case['load_s']:7.1f}/{case['load_resident_s']:7.1f} "
              f"{case['vision_s']:8.2f} {case['vision_prefill_s']:9.2f} {case['decode_tok_s']:9.2f} {memory}",
              flush=True)
        report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        write_json(args.json, report)  # after every case: a long run that is stopped keeps what it has


if __name__ == "__main__":
    main()
