"""An int8 vision tower, measured: dynamic int8 quantization of its Linear layers, for speed and for error.

    python benchmarks/vision_int8.py --json benchmarks/results/vision_int8.json

The vision tower is the largest part of a big crop on the CPU. `torch.ao.quantization.quantize_dynamic` turns
every `nn.Linear` of the tower (qkv, proj, the SwiGLU fc1/fc2/fc3, the merger) into an int8 layer (weights int8
per tensor, activations quantized per call; oneDNN/fbgemm VNNI kernels on x86). It works from fp32 weights only.

1. Error on the golden fixture (tests/data/dots_tiny): the tower's output against the official architecture's
   `vision_embeddings` (fp32, int8), and the greedy tokens of the whole model (8 tokens, the fixture's; and 64
   tokens against the fp32 model's own), since `--vision-precision int8` could only be offered if they stay
   identical.
2. Speed and error at full size (random weights, `engine_full_size.py`'s checkpoint): the tower alone in fp32,
   bf16 and int8 on the crops given, alternating within each round; error is ||y - y_fp32|| / ||y_fp32|| over the
   tower's output. Random weights have no outliers; trained weights usually do, and int8 error is then larger.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_full_size import FIXTURE, write_checkpoint  # noqa: E402
from measure import machine, median, page_image, write_json  # noqa: E402


def int8(tower):
    import torch
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(tower.float(), {torch.nn.Linear}, dtype=torch.qint8)


def relative(y, reference) -> float:
    return float((y.float() - reference.float()).norm() / reference.float().norm())


def golden() -> dict:
    import copy

    import torch
    from safetensors.torch import load_file

    from dotocr.engine import DotsOCRForCausalLM

    inputs, expected = load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "expected.safetensors")
    model = DotsOCRForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32).eval()
    quantized = copy.deepcopy(model)
    quantized.vision_tower = int8(quantized.vision_tower)
    out: dict = {}

    def run(m, tokens: int):
        with torch.inference_mode():
            embeds = m.vision_tower(inputs["pixel_values"], inputs["image_grid_thw"])
            generated = m.generate(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                   image_grid_thw=inputs["image_grid_thw"], max_new_tokens=tokens,
                                   min_new_tokens=tokens, do_sample=False)
        return embeds, generated[0, inputs["input_ids"].shape[1]:].tolist()

    for name, m in (("fp32", model), ("int8", quantized)):
        embeds, tokens = run(m, 64)
        out[name] = {"max_abs_error": float((embeds - expected["vision_embeddings"]).abs().max()),
                     "relative_error": relative(embeds, expected["vision_embeddings"]),
                     "greedy_8_match": tokens[:8] == expected["greedy_tokens"].tolist(), "tokens_64": tokens}
    out["int8"]["tokens_64_match_fp32"] = out["int8"]["tokens_64"] == out["fp32"]["tokens_64"]
    return out


def full_size(folder: Path, crops: list[str], rounds: int) -> dict:
    import torch

    from dotocr.engine.inputs.preprocessing import ImagePreparer
    from dotocr.engine.model.vision_tower import load_vision_tower

    towers = {"fp32": load_vision_tower(folder, dtype=torch.float32), "bf16": load_vision_tower(folder,
                                                                                                dtype=torch.bfloat16)}
    towers["int8"] = int8(load_vision_tower(folder, dtype=torch.float32))
    preparer = ImagePreparer.from_pretrained(folder)
    report: dict = {}
    for crop in crops:
        width, height = (int(v) for v in crop.split("x"))
        prepared = preparer.prepare(page_image(width, height), 2048)
        seconds: dict[str, list[float]] = {name: [] for name in towers}
        outputs = {}
        for round_no in range(rounds):
            for name in (list(towers) if round_no % 2 == 0 else list(towers)[::-1]):
                with torch.inference_mode():
                    started = time.perf_counter()
                    outputs[name] = towers[name](prepared.pixel_values, prepared.grid_thw)
                    seconds[name].append(time.perf_counter() - started)
        report[crop] = {"image_tokens": prepared.image_tokens,
                        "seconds": {k: median(v) for k, v in seconds.items()}, "all_seconds": seconds,
                        "relative_error_vs_fp32": {k: relative(outputs[k], outputs["fp32"]) for k in ("bf16", "int8")}}
        print(crop, report[crop]["seconds"], report[crop]["relative_error_vs_fp32"], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", nargs="+", default=["400x100", "1024x768"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=str(Path(tempfile.gettempdir()) / "dotocr-benchmark-full-size"))
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    report = {"machine": machine(), "golden": golden()}
    print({k: {x: y for x, y in v.items() if x != "tokens_64"} for k, v in report["golden"].items()}, flush=True)
    report["full_size"] = full_size(write_checkpoint(Path(args.checkpoint)), args.crops, args.rounds)
    report["machine"]["load_average_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    write_json(args.json, report)


if __name__ == "__main__":
    main()
