"""What `DotOCRInference.ocr` costs on top of a bare `model.generate` producing the same tokens.

    python benchmarks/engine_overhead.py --json out.json
    python benchmarks/engine_overhead.py --profile          # where the engine's extra time goes

Both sides use the same loaded tiny model (the golden fixture, tests/data/dots_tiny, float32 on CPU), the same
pixel values and input ids (the bare side gets them from the engine's own preparer and prompt encoder, once,
outside the timing), the same max_new_tokens, greedy, the same eos ids. The script checks that both sides
generate identical token ids. Calls alternate engine / bare so that load from other jobs hits both alike; the
figure is the median over the pairs of (engine - bare) / bare. The engine's time is its whole `ocr()` call:
image preparation, prompt, queue and lock, state callbacks, the repetition guard, the text streamer, decoding
and formatting. On a tiny model every step of generate is short, so this is the worst case for the ratio: with
the real model each step costs ~1000x more and the engine's per-call work stays the same.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import REPO, machine, median, page_image, write_json  # noqa: E402

FIXTURE = REPO / "tests" / "data" / "dots_tiny"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(FIXTURE))
    parser.add_argument("--crop", default="400x100")
    parser.add_argument("--new-tokens", type=int, default=128,
                        help="the golden model writes no loop (by the loop guard's rules) in its first 128 "
                             "tokens, so both sides generate the same tokens")
    parser.add_argument("--pairs", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on a shared 2-core machine two OpenMP threads on a "
                             "tiny model mostly wait for each other, and the timings scatter 10x")
    parser.add_argument("--profile", action="store_true", help="also profile engine calls and list the top costs")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()  # the fixture's max_length warning, once per call otherwise

    from dotocr.config import Settings
    from dotocr.engine import DotOCRInference
    from dotocr.engine.inputs.prompts import encode_prompt, instruction_for

    settings = Settings(model=args.model, device="cpu", precision="fp32", decoder="torch",
                        max_new_tokens=args.new_tokens)
    engine = DotOCRInference(settings)
    engine.load()
    loaded = engine._loaded  # the engine's own model, tokenizer and preparer serve the bare side too
    width, height = (int(v) for v in args.crop.split("x"))
    image = page_image(width, height)
    prepared = loaded.preparer.prepare(image, settings.max_image_size)
    ids = encode_prompt(loaded.tokenizer, instruction_for("text"), prepared.image_tokens)
    inputs = {"input_ids": torch.tensor([ids]), "pixel_values": prepared.pixel_values,
              "image_grid_thw": prepared.grid_thw}

    def bare() -> list[int]:
        with torch.inference_mode():
            out = loaded.decoder.model.generate(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]),
                                        max_new_tokens=args.new_tokens, do_sample=False,
                                        eos_token_id=loaded.eos_token_ids, pad_token_id=loaded.eos_token_ids[0])
        return out[0, len(ids):].tolist()

    def through_engine():
        return engine.ocr(image)

    reference = bare()
    result = through_engine()
    same_text = loaded.tokenizer.decode(reference, skip_special_tokens=True) == result.raw
    if len(reference) != result.generated_tokens or not same_text:
        sys.exit(f"the engine generated {result.generated_tokens} tokens ({result.stop_reason}), bare generate "
                 f"{len(reference)}: not the same tokens, so the comparison would be meaningless.")

    engine_s, bare_s, ratios, stages = [], [], [], []
    for i in range(args.pairs):
        order = (("engine", through_engine), ("bare", bare)) if i % 2 == 0 else (("bare", bare),
                                                                                   ("engine", through_engine))
        took = {}
        for name, fn in order:
            start = time.perf_counter()
            value = fn()
            took[name] = time.perf_counter() - start
            if name == "engine":
                stages.append(value.timings)
        engine_s.append(took["engine"])
        bare_s.append(took["bare"])
        ratios.append((took["engine"] - took["bare"]) / took["bare"])

    report = {
        "machine": machine(), "model": args.model, "crop": args.crop, "model_input": list(prepared.image.size),
        "prompt_tokens": len(ids), "generated_tokens": len(reference), "stop_reason": result.stop_reason,
        "pairs": args.pairs, "engine_median_s": round(median(engine_s), 4), "bare_median_s": round(median(bare_s), 4),
        "overhead_median": round(median(ratios), 4),
        "overhead_of_medians": round(median(engine_s) / median(bare_s) - 1, 4),
        "engine_preprocess_median_s": round(median([s["preprocess"] for s in stages]), 4),
        "per_token_overhead_ms": round((median(engine_s) - median(bare_s)) / len(reference) * 1000, 3),
    }
    print(f"# {report['machine']}")
    print(f"{len(reference)} tokens, {args.pairs} alternating pairs: engine {report['engine_median_s']:.3f} s, "
          f"bare generate {report['bare_median_s']:.3f} s -> overhead {report['overhead_median']:+.1%} "
          f"(median of pair ratios; of medians {report['overhead_of_medians']:+.1%}); engine preprocessing "
          f"{report['engine_preprocess_median_s'] * 1000:.1f} ms")
    if args.profile:
        report["profile_top"] = profile(through_engine, bare)
    write_json(args.json, report)


def profile(through_engine, bare, calls: int = 5) -> dict[str, list[str]]:
    """cProfile both sides; the functions whose own time differs most show where the engine's extra goes."""
    tables = {}
    for name, fn in (("engine", through_engine), ("bare", bare)):
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            fn()
        prof.disable()
        tables[name] = pstats.Stats(prof).stats
    own = {side: {f"{Path(k[0]).name}:{k[1]}:{k[2]}": v[2] / calls for k, v in stats.items()}
           for side, stats in tables.items()}
    extra = sorted(((own["engine"].get(k, 0) - own["bare"].get(k, 0), k) for k in own["engine"]), reverse=True)
    lines = [f"{delta * 1000:8.2f} ms/call  {key}" for delta, key in extra[:20]]
    print("# functions with the most extra own time per engine call (engine - bare):")
    print("\n".join(lines))
    return {"extra_own_time": lines}


if __name__ == "__main__":
    main()
