"""Where a torch decode step's time goes, and the matrix-vector kernel choice before and after, in one run.

    python benchmarks/torch_step.py --json benchmarks/results/torch_step.json

Four parts, all in this one process, each alternating "before" (plain `nn.Linear`, i.e. `F.linear`) and
"after" (`VectorLinear`, dotocr/engine/vector_linear.py) round by round, reversing the order every round, so
that other jobs on the machine hit both alike; figures are medians over `--rounds`:
1. kernels: one bf16 row times each weight shape of the decoder, `F.linear` against `torch.mv`, and the fp32
   `F.linear` for scale. Each pass runs over enough copies of the weight (~1.2 GB) that they cannot sit in the
   last-level cache, as in a real step, which streams 3 GB of weights.
2. decode step, full size: the random-weight checkpoint of `engine_full_size.py` loaded by the engine's own
   `load_checkpoint` (bf16), a `--prompt-tokens` text prompt, then `--steps` bare forward steps on the KV
   cache, and a greedy `generate` of `--new-tokens` (timed from the first to the last new token). The
   difference between the two per-step times is what `generate` itself adds per token. The generated tokens
   of every before and after run are compared: they must be identical.
3. profile: torch.profiler over `--steps` forward steps, before and after, the top operators by own time.
4. Python overhead, small model: the same generate-minus-forward figure on a 2-layer, 64-wide model, where
   the arithmetic is negligible and what is left is generate's and the model code's per-step bookkeeping.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_full_size import write_checkpoint  # noqa: E402
from measure import machine, median, write_json  # noqa: E402

from dotocr.engine.vector_linear import VectorLinear  # noqa: E402

SHAPES = {"q_proj / o_proj": (1536, 1536), "k_proj / v_proj": (256, 1536), "gate_proj / up_proj": (8960, 1536),
          "down_proj": (1536, 8960), "lm_head": (151936, 1536)}
STREAM_BYTES = 1.2e9


def set_kernel(model: nn.Module, after: bool) -> None:
    """Switch the decoder's linear layers between plain nn.Linear (before) and VectorLinear (after)."""
    for module in [*model.model.modules(), model.lm_head]:
        if isinstance(module, nn.Linear):
            module.__class__ = VectorLinear if after else nn.Linear


def alternate(rounds: int, cases: dict) -> dict[str, list]:
    """Run every case once per round, reversing the order each round; returns each case's results."""
    results: dict[str, list] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(cases[name]())
    return results


def kernels(rounds: int) -> list[dict]:
    rows = []
    for label, (out_f, in_f) in SHAPES.items():
        copies = max(2, int(STREAM_BYTES / (out_f * in_f * 2)))
        weights = [torch.randn(out_f, in_f, dtype=torch.bfloat16) for _ in range(copies)]
        weights32 = [w.float() for w in weights[:max(2, copies // 2)]]
        x = torch.randn(1, in_f, dtype=torch.bfloat16)
        x32 = x.float()

        def timed(fn, ws, x=x):
            def run() -> float:
                start = time.perf_counter()
                for w in ws:
                    fn(x, w)
                return (time.perf_counter() - start) / len(ws)
            return run
        with torch.inference_mode():
            res = alternate(rounds, {
                "before": timed(F.linear, weights),
                "after": timed(lambda x, w: torch.mv(w, x[0]), weights),
                "fp32": timed(F.linear, weights32, x32),
            })
        row = {"weight": label, "shape": [out_f, in_f], "copies": copies,
               **{k: median(v[1:] or v) for k, v in res.items()}, "samples": res}
        rows.append(row)
        print(f"  {label:20} {out_f:6}x{in_f:<5} before {row['before'] * 1e6:8.0f} us  after "
              f"{row['after'] * 1e6:8.0f} us  ({row['before'] / row['after']:.2f}x)  fp32 {row['fp32'] * 1e6:8.0f} us",
              flush=True)
        del weights, weights32
    return rows


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


def forward_steps(model, prompt: torch.Tensor, steps: int, around=contextlib.nullcontext) -> tuple[float, list[int]]:
    """Median seconds of one bare decode forward on the KV cache, after a prefill of `prompt` (not timed, and
    outside `around`, a context entered for the steps only)."""
    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        position, times, tokens = prompt.shape[1], [], []
        with around():
            _steps(model, cache, token, position, steps, times, tokens)
    return median(times), tokens


def _steps(model, cache, token, position: int, steps: int, times: list, tokens: list) -> None:
    for _ in range(steps):
        start = time.perf_counter()
        out = model(input_ids=token, cache=cache, use_cache=True, position_ids=torch.tensor([[position]]),
                    logits_to_keep=1)
        token = out.logits[:, -1:].argmax(-1)
        times.append(time.perf_counter() - start)
        tokens.append(int(token))
        position += 1


def generate_step(model, prompt: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    """Seconds per token of a greedy generate (first to last new token) and the tokens it made."""
    clock = TokenClock()
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, streamer=clock)
    return (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1), out[0, prompt.shape[1]:].tolist()


def step_cases(model, prompt: torch.Tensor, steps: int, new_tokens: int) -> dict:
    def case(after: bool, kind: str):
        def run():
            set_kernel(model, after)
            return forward_steps(model, prompt, steps) if kind == "forward" else generate_step(model, prompt,
                                                                                                 new_tokens)
        return run
    return {f"{k} {w}": case(w == "after", k) for k in ("forward", "generate") for w in ("before", "after")}


def summarise_steps(res: dict) -> dict:
    summary = {name: median([s for s, _ in runs]) for name, runs in res.items()}
    tokens = {name: [t for _, t in runs] for name, runs in res.items()}
    identical = all(t == tokens["generate before"][0] for t in tokens["generate before"] + tokens["generate after"])
    identical = identical and all(t == tokens["forward before"][0]
                                  for t in tokens["forward before"] + tokens["forward after"])
    return {"seconds": summary, "tokens_identical": identical, "tokens": tokens["generate after"][0],
            "samples": {name: [s for s, _ in runs] for name, runs in res.items()}}


def print_steps(summary: dict) -> None:
    s = summary["seconds"]
    for w in ("before", "after"):
        fwd, gen = s[f"forward {w}"], s[f"generate {w}"]
        print(f"  {w:6}: forward step {fwd * 1e3:7.1f} ms, generate {gen * 1e3:7.1f} ms/token "
              f"({1 / gen:5.2f} tok/s), generate adds {(gen - fwd) * 1e3:6.1f} ms", flush=True)
    print(f"  tokens identical before/after: {summary['tokens_identical']}", flush=True)


def profile(model, prompt: torch.Tensor, steps: int) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    tables = {}
    for name, after in (("before", False), ("after", True)):
        set_kernel(model, after)
        forward_steps(model, prompt, 1)
        prof = torch_profile(activities=[ProfilerActivity.CPU])
        forward_steps(model, prompt, steps, around=lambda prof=prof: prof)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        tables[name] = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                         "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
                        for e in events[:8]]
        print(f"  {name} (per decode step):", flush=True)
        for row in tables[name]:
            print(f"    {row['op']:50} {row['self_ms_per_step']:8.2f} ms {row['share'] * 100:5.1f} % "
                  f"{row['calls_per_step']:6.1f} calls", flush=True)
    return tables


def small_model_overhead(rounds: int, steps: int, new_tokens: int) -> dict:
    from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM

    torch.manual_seed(0)
    config = DotsOCRConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, image_token_id=1000, video_token_id=991,
                           vision_config={"embed_dim": 64, "hidden_size": 64, "intermediate_size": 128,
                                          "num_hidden_layers": 1, "num_attention_heads": 4})
    model = DotsOCRForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide product gains nothing from a second thread, and a busy core stalls it
    prompt = torch.randint(10, 900, (1, 64))
    res = alternate(rounds, {"forward": lambda: forward_steps(model, prompt, steps),
                             "generate": lambda: generate_step(model, prompt, new_tokens)})
    torch.set_num_threads(threads)
    fwd, gen = median([s for s, _ in res["forward"]]), median([s for s, _ in res["generate"]])
    print(f"  bare forward {fwd * 1e3:.2f} ms, generate {gen * 1e3:.2f} ms/token: generate adds "
          f"{(gen - fwd) * 1e3:.2f} ms per token", flush=True)
    return {"forward_s": fwd, "generate_s": gen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--checkpoint", default=str(Path("/tmp") / "dotocr-benchmark-full-size"))
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {"machine": machine()}
    print(f"# {report['machine']}", flush=True)

    if not args.skip_kernels:
        print("1. kernels, one bf16 row times each decoder weight (streamed past the cache):", flush=True)
        report["kernels"] = kernels(args.rounds)
        write_json(args.json, report)

    from dotocr.engine.loading import LoadPlan, load_checkpoint

    loaded = load_checkpoint(write_checkpoint(Path(args.checkpoint)), LoadPlan("cpu", "bf16", "benchmark"))
    model = loaded.decoder.model
    with torch.inference_mode():
        for param in model.parameters():  # read the memory-mapped weights in before timing
            param.sum()
    torch.manual_seed(1)
    prompt = torch.randint(10, 900, (1, args.prompt_tokens))
    print(f"2. full-size decode step, bf16, {args.prompt_tokens}-token prompt, {args.threads} threads:", flush=True)
    res = alternate(args.rounds, step_cases(model, prompt, args.steps, args.new_tokens))
    report["full_size"] = summarise_steps(res)
    print_steps(report["full_size"])
    write_json(args.json, report)

    print("3. profile of the full-size forward step:", flush=True)
    report["profile"] = profile(model, prompt, args.steps)
    del model, loaded

    print("4. small model (2 layers, 64 wide), fp32, 1 thread: what generate adds per token", flush=True)
    report["small_model"] = small_model_overhead(args.rounds, 32, 32)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"# load average at the end: {report['machine']['load_average_end']}", flush=True)
    write_json(args.json, report)


if __name__ == "__main__":
    main()
