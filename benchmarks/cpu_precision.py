"""bf16 or fp32 on this CPU? The real decoder, both precisions in one process, steps interleaved.

    python benchmarks/cpu_precision.py --json out.json

`plan_load` picks the CPU precision with a quick probe (`cpu_prefers_bf16`). This script checks the probe
against the real thing: the full-size decoder (`DotsOCRConfig()` defaults, random weights; the vision tower
cut to one block, as it plays no part here) in bf16 and in fp32, side by side in one process, taking turns so
that load from other jobs hits both alike:
- decode: seconds per generated token (a greedy `generate` of `--new-tokens` after a short text prompt,
  `min_new_tokens` fixed, timed from the first to the last new token);
- prefill: one forward over a `--prefill-tokens` prompt (about a 1024 x 768 crop's image tokens);
- the probe's own product (`x @ weight`, weight stored (in, out)) and the product the model runs
  (`F.linear`, weight stored (out, in)), at the probe's size.
Each figure is the median over `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, median, write_json  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class TokenClock:
    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def build_models() -> dict[str, torch.nn.Module]:
    from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM

    config = DotsOCRConfig(vision_config={"num_hidden_layers": 1})
    torch.manual_seed(0)
    fp32 = DotsOCRForCausalLM(config).eval()
    bf16 = DotsOCRForCausalLM(config).to(torch.bfloat16).eval()
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in fp32.state_dict().items()})
    return {"bf16": bf16, "fp32": fp32}


def decode_seconds_per_token(model, prompt: torch.Tensor, new_tokens: int) -> float:
    clock = TokenClock()
    with torch.inference_mode():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, streamer=clock)
    return (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1)


def prefill_seconds(model, prompt: torch.Tensor) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model(input_ids=prompt, use_cache=False, logits_to_keep=1)
        return time.perf_counter() - start


def product_seconds(dtype: torch.dtype, layout: str, repeats: int = 20) -> float:
    """The probe's matrix-vector product (1536 x 8960), in its layout or in nn.Linear's."""
    x = torch.randn(1, 1536, dtype=dtype)
    if layout == "probe x @ W":
        weight = torch.randn(1536, 8960, dtype=dtype)
        fn = lambda: x @ weight  # noqa: E731
    else:
        weight = torch.randn(8960, 1536, dtype=dtype)
        fn = lambda: F.linear(x, weight)  # noqa: E731
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--prefill-tokens", type=int, default=1049)
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()

    models = build_models()
    generator = torch.Generator().manual_seed(1)
    short = torch.randint(0, 1000, (1, 64), generator=generator)
    long = torch.randint(0, 1000, (1, args.prefill_tokens), generator=generator)
    samples: dict[str, dict[str, list[float]]] = {}
    for round_ in range(args.rounds):
        order = list(DTYPES) if round_ % 2 == 0 else list(reversed(DTYPES))
        for name in order:
            row = samples.setdefault(name, {"decode_s_per_token": [], "prefill_s": [], "probe x @ W": [],
                                            "F.linear": []})
            row["decode_s_per_token"].append(decode_seconds_per_token(models[name], short, args.new_tokens))
            row["prefill_s"].append(prefill_seconds(models[name], long))
            for layout in ("probe x @ W", "F.linear"):
                row[layout].append(product_seconds(DTYPES[name], layout))
    medians = {name: {k: median(v) for k, v in row.items()} for name, row in samples.items()}
    ratios = {k: round(medians["fp32"][k] / medians["bf16"][k], 2) for k in medians["bf16"]}
    report = {"machine": machine(), "medians": medians, "fp32_over_bf16_time": ratios, "samples": samples}
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"# {report['machine']}")
    for key in medians["bf16"]:
        print(f"{key:20} bf16 {medians['bf16'][key] * 1000:9.2f} ms   fp32 {medians['fp32'][key] * 1000:9.2f} ms"
              f"   bf16 is {ratios[key]:.2f}x as fast")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
