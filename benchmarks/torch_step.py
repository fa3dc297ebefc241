"""Where a torch decode step's time goes, and the matrix-vector kernel choice before and after, in one run.

    python benchmarks/torch_step.py --json benchmarks/results/torch_step.json

Four parts, all in this one process. "before" is plain `nn.Linear` (`F.linear`), "after" is `VectorLinear`
(dotocr/engine/vector_linear.py). Other jobs share the machine, so the two are interleaved as finely as
possible, call by call or step by step (before, after, after, before, ...), and every figure is a median:
1. kernels: one bf16 row times each weight shape of the decoder, `F.linear` against `torch.mv`, and the fp32
   `F.linear` for scale; and both bf16 calls with `torch.backends.mkldnn` off, the path of a CPU where
   oneDNN does not take bf16 (no AVX-512), where both end in ATen's own kernels. Call i uses copy i of the
   weight, and the copies (~1.2 GB) cannot sit in the last-level cache, as in a real step, which streams 3 GB
   of weights.
2. decode step, full size: the random-weight checkpoint of `engine_full_size.py` loaded by the engine's own
   `load_checkpoint` (bf16), a `--prompt-tokens` text prompt; then, `--rounds` times, `--steps` bare forward
   steps on the KV cache and one greedy `generate` of `--new-tokens` (per token: from one new token to the
   next), the kernel switched between steps (the numbers are bit-identical, so switching changes no token).
   generate's per-token time minus the bare step is what `generate` itself adds. Every run's tokens are
   compared with those of the same run with nn.Linear throughout: they must be identical.
3. profile: torch.profiler over `--steps` forward steps, before and after, the top operators by own time.
4. Python overhead, small model: part 2 on a 2-layer, 64-wide bf16 model at 1 thread, where the arithmetic
   is negligible and what is left is generate's and the model code's per-step bookkeeping.
"""

from __future__ import annotations

import argparse
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

from dotocr.engine.model.vector_linear import VectorLinear  # noqa: E402

SHAPES = {"q_proj / o_proj": (1536, 1536), "k_proj / v_proj": (256, 1536), "gate_proj / up_proj": (8960, 1536),
          "down_proj": (1536, 8960), "lm_head": (151936, 1536)}
STREAM_BYTES = 1.2e9


def set_kernel(model: nn.Module, after: bool) -> None:
    """Switch the decoder's linear layers between plain nn.Linear (before) and VectorLinear (after)."""
    for module in [*model.model.modules(), model.lm_head]:
        if isinstance(module, nn.Linear):
            module.__class__ = VectorLinear if after else nn.Linear


def abba(i: int) -> bool:
    """before, after, after, before, ...: each kernel runs as often first as second within a pair."""
    return i % 4 in (1, 2)


def kernels(rounds: int) -> list[dict]:
    """Per call, interleaved: call i runs one kernel on copy i, so every call reads a weight that has been out
    of use for a whole pass (~1.2 GB of other weights) and load from other jobs hits both kernels alike."""
    rows = []
    for label, (out_f, in_f) in SHAPES.items():
        copies = max(5, int(STREAM_BYTES / (out_f * in_f * 2)))
        weights = [torch.randn(out_f, in_f, dtype=torch.bfloat16) for _ in range(copies)]
        weights32 = [w.float() for w in weights[:max(1, copies // 5)]]
        x = torch.randn(1, in_f, dtype=torch.bfloat16)
        x32 = x.float()
        def no_onednn(fn):
            def run(matrix):
                torch.backends.mkldnn.enabled = False
                try:
                    return fn(matrix)
                finally:
                    torch.backends.mkldnn.enabled = True
            return run
        runs = {"before": lambda w, x=x: F.linear(x, w), "after": lambda w, x=x: torch.mv(w, x[0]),
                "fp32": lambda w, x=x32: F.linear(x, w)}
        runs["before, oneDNN off"] = no_onednn(runs["before"])
        runs["after, oneDNN off"] = no_onednn(runs["after"])
        names = list(runs)
        times: dict[str, list[float]] = {name: [] for name in names}
        with torch.inference_mode():
            for r in range(rounds + 1):  # the first pass warms up and is not counted
                for i, w in enumerate(weights):
                    name = names[(i + r) % len(names)]
                    weight = weights32[(i // len(names)) % len(weights32)] if name == "fp32" else w
                    start = time.perf_counter()
                    runs[name](weight)
                    if r:
                        times[name].append(time.perf_counter() - start)
        row = {"weight": label, "shape": [out_f, in_f], "copies": copies,
               **{name: median(v) for name, v in times.items()}, "calls": {n: len(v) for n, v in times.items()}}
        rows.append(row)
        print(f"  {label:20} {out_f:6}x{in_f:<5} before {row['before'] * 1e6:8.0f} us  after "
              f"{row['after'] * 1e6:8.0f} us  ({row['before'] / row['after']:.2f}x)  fp32 {row['fp32'] * 1e6:8.0f} us"
              f"  oneDNN off: before {row['before, oneDNN off'] * 1e6:8.0f} us  after "
              f"{row['after, oneDNN off'] * 1e6:8.0f} us", flush=True)
        del weights, weights32
    return rows


def forward_steps(model, prompt: torch.Tensor, steps: int, switch: bool = True) -> dict[str, list]:
    """Bare decode forwards on the KV cache after a prefill of `prompt`, the kernel switched step by step
    (abba; with `switch` False, nn.Linear throughout). Returns each kernel's step times and the tokens."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    tokens = []
    with torch.inference_mode():
        set_kernel(model, False)
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache, token, position = out.past_key_values, out.logits[:, -1:].argmax(-1), prompt.shape[1]
        for i in range(steps):
            after = switch and abba(i)
            set_kernel(model, after)
            start = time.perf_counter()
            out = model(input_ids=token, cache=cache, use_cache=True, position_ids=torch.tensor([[position]]),
                        logits_to_keep=1)
            token = out.logits[:, -1:].argmax(-1)
            times["after" if after else "before"].append(time.perf_counter() - start)
            tokens.append(int(token))
            position += 1
    return {**times, "tokens": tokens}


class SwitchingClock:
    """A generate() streamer: notes when each new token arrives and switches the kernel for the next step
    (abba), so one generate measures both; the first put is the prompt."""

    def __init__(self, model) -> None:
        self.model = model
        self.last: float | None = None
        self.after = False
        self.count = 0
        self.times: dict[str, list[float]] = {"before": [], "after": []}

    def put(self, value) -> None:
        now = time.perf_counter()
        if self.count:
            if self.last is not None:
                self.times["after" if self.after else "before"].append(now - self.last)
            self.last = now
            self.after = abba(self.count - 1)
            set_kernel(self.model, self.after)
        self.count += 1

    def end(self) -> None:
        pass


def generate_steps(model, prompt: torch.Tensor, new_tokens: int) -> dict[str, list]:
    """Per-token times of one greedy generate whose steps alternate the kernel, and its tokens."""
    clock = SwitchingClock(model)
    set_kernel(model, False)
    with torch.inference_mode():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, streamer=clock)
    return {**clock.times, "tokens": out[0, prompt.shape[1]:].tolist()}


def full_size(model, prompt: torch.Tensor, rounds: int, steps: int, new_tokens: int) -> dict:
    pooled = {kind: {"before": [], "after": []} for kind in ("forward", "generate")}
    tokens = {"forward": [], "generate": []}
    for _ in range(rounds):
        for kind, fn, n in (("forward", forward_steps, steps), ("generate", generate_steps, new_tokens)):
            res = fn(model, prompt, n)
            for w in ("before", "after"):
                pooled[kind][w] += res[w]
            tokens[kind].append(res["tokens"])
    set_kernel(model, False)
    with torch.inference_mode():  # the references: nn.Linear throughout
        reference = {"generate": model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                do_sample=False)[0, prompt.shape[1]:].tolist(),
                     "forward": forward_steps(model, prompt, steps, switch=False)["tokens"]}
    identical = all(t == reference[kind] for kind in tokens for t in tokens[kind])
    seconds = {f"{kind} {w}": median(v) for kind, d in pooled.items() for w, v in d.items()}
    # before[k] and after[k] ran next to each other (abba), so their ratio sees the same load.
    paired = {kind: median([b / a for b, a in zip(d["before"], d["after"], strict=False)])
              for kind, d in pooled.items()}
    return {"seconds": seconds, "paired_speedup": paired, "tokens_identical": identical, "samples": pooled,
            "tokens": tokens,
            "reference_tokens": reference,
            "steps_each": {k: len(v) for k, v in pooled["forward"].items()}}


def print_steps(summary: dict) -> None:
    s = summary["seconds"]
    for w in ("before", "after"):
        fwd, gen = s[f"forward {w}"], s[f"generate {w}"]
        print(f"  {w:6}: forward step {fwd * 1e3:7.1f} ms, generate {gen * 1e3:7.1f} ms/token "
              f"({1 / gen:5.2f} tok/s), generate adds {(gen - fwd) * 1e3:6.1f} ms", flush=True)
    paired = summary["paired_speedup"]
    print(f"  before/after, median of neighbouring pairs: forward {paired['forward']:.3f}x, generate "
          f"{paired['generate']:.3f}x; tokens identical to nn.Linear's: {summary['tokens_identical']}", flush=True)


def profile(model, prompt: torch.Tensor, steps: int) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    tables = {}
    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache, token, position = out.past_key_values, out.logits[:, -1:].argmax(-1), prompt.shape[1]
        for name, after in (("before", False), ("after", True)):
            set_kernel(model, after)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    out = model(input_ids=token, cache=cache, use_cache=True,
                                position_ids=torch.tensor([[position]]), logits_to_keep=1)
                    token, position = out.logits[:, -1:].argmax(-1), position + 1
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events)
            tables[name] = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
                            for e in events[:8]]
            print(f"  {name} (per decode step; one profile after the other, so load may differ):", flush=True)
            for row in tables[name]:
                print(f"    {row['op']:50} {row['self_ms_per_step']:8.2f} ms {row['share'] * 100:5.1f} % "
                      f"{row['calls_per_step']:6.1f} calls", flush=True)
    return tables


def small_model_overhead(rounds: int, new_tokens: int) -> dict:
    from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM

    torch.manual_seed(0)
    config = DotsOCRConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, image_token_id=1000, video_token_id=991,
                           vision_config={"embed_dim": 64, "hidden_size": 64, "intermediate_size": 128,
                                          "num_hidden_layers": 1, "num_attention_heads": 4})
    model = DotsOCRForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.pad_token_id = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide product gains nothing from a second thread, and a busy core stalls it
    prompt = torch.randint(10, 900, (1, 64))
    res = full_size(model, prompt, rounds, new_tokens, new_tokens)
    torch.set_num_threads(threads)
    print_steps(res)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=25)
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

    from dotocr.engine.loading import load_checkpoint
    from dotocr.engine.plan import LoadPlan

    loaded = load_checkpoint(write_checkpoint(Path(args.checkpoint)), LoadPlan("cpu", "bf16", "benchmark"))
    model = loaded.decoder.model
    with torch.inference_mode():
        for param in model.parameters():  # read the memory-mapped weights in before timing
            param.sum()
    torch.manual_seed(1)
    prompt = torch.randint(10, 900, (1, args.prompt_tokens))
    print(f"2. full-size decode step, bf16, {args.prompt_tokens}-token prompt, {args.threads} threads:", flush=True)
    report["full_size"] = full_size(model, prompt, args.rounds, args.steps, args.new_tokens)
    print_steps(report["full_size"])
    write_json(args.json, report)

    print("3. profile of the full-size forward step:", flush=True)
    report["profile"] = profile(model, prompt, args.steps)
    del model, loaded

    print("4. small model (2 layers, 64 wide), bf16, 1 thread: what generate adds per token", flush=True)
    report["small_model"] = small_model_overhead(args.rounds, 48)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"# load average at the end: {report['machine']['load_average_end']}", flush=True)
    write_json(args.json, report)


if __name__ == "__main__":
    main()
