"""One real-size vision block: peak extra memory and seconds, our attention against the dense-mask fallback.

    python benchmarks/vision_attention.py                      # bf16 and fp32, 1036 and 1512 px
    python benchmarks/vision_attention.py --dtypes bf16 --sizes 1036 --json out.json

The block is a `DotsVisionBlock` built from `DotsVisionConfig()` (embed 1536, 12 heads, SwiGLU 4224) with
random weights; speed and memory do not depend on the weight values. A square crop of N px is (N/14)^2
patches. Each case runs in its own child process (see measure.py for how peak memory is read), the variants
side by side:

- ours:   the model's `DotsVisionAttention`: per-image `scaled_dot_product_attention` on 4-D tensors.
- dense:  the official eager fallback, written here: an S x S mask filled with the dtype's most negative value
          (zero inside each image), matmul scores, softmax in float32, cast back, matmul with V.
- sdpa3d: our per-image SDPA call but with 3-D (heads, seq, dim) tensors, as the official SDPA path passes
          them; on CPU that layout misses the flash kernel and takes the math kernel, which builds S x S
          scores.

The three variants share the block's weights; a small fp32 check at the start shows they compute the same.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import (  # noqa: E402
    GIB,
    MIB,
    PeakMemory,
    available_bytes,
    calibrate,
    machine,
    median,
    run_child,
    timed,
    write_json,
)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
VARIANTS = ("ours", "dense", "sdpa3d")
PATCH = 14


def dense_attention(self, hidden_states: torch.Tensor, cu_seqlens: list[int],
                    rotary: torch.Tensor) -> torch.Tensor:
    """The official non-flash fallback: one S x S additive mask over all patches of all images."""
    from dotocr.engine.model.modeling_dots_ocr import apply_vision_rotary

    seq = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).view(seq, 3, self.num_heads, self.head_dim).unbind(1)
    q = apply_vision_rotary(q, rotary)
    k = apply_vision_rotary(k, rotary)
    mask = torch.full((1, seq, seq), torch.finfo(q.dtype).min, dtype=q.dtype, device=q.device)
    for start, end in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):
        mask[..., start:end, start:end] = 0
    q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (heads, seq, dim)
    scores = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(self.head_dim)
    scores = scores + mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights, v).transpose(0, 1).reshape(seq, -1)
    return self.proj(out)


def sdpa_3d_attention(self, hidden_states: torch.Tensor, cu_seqlens: list[int],
                      rotary: torch.Tensor) -> torch.Tensor:
    """Like ours, but SDPA sees (heads, seq, dim): the layout the CPU flash kernel does not accept."""
    from dotocr.engine.model.modeling_dots_ocr import apply_vision_rotary

    seq = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).view(seq, 3, self.num_heads, self.head_dim).unbind(1)
    q = apply_vision_rotary(q, rotary)
    k = apply_vision_rotary(k, rotary)
    out = torch.empty_like(q)
    for start, end in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):
        qi, ki, vi = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out[start:end] = F.scaled_dot_product_attention(qi, ki, vi).transpose(0, 1)
    return self.proj(out.reshape(seq, -1))


def build_block(variant: str, dtype: torch.dtype, config=None):
    from dotocr.engine.model.configuration_dots import DotsVisionConfig
    from dotocr.engine.model.modeling_dots_ocr import DotsVisionBlock

    config = config or DotsVisionConfig()
    torch.manual_seed(0)
    block = DotsVisionBlock(config).to(dtype).eval()
    if variant == "dense":
        block.attn.forward = types.MethodType(dense_attention, block.attn)
    elif variant == "sdpa3d":
        block.attn.forward = types.MethodType(sdpa_3d_attention, block.attn)
    return block


def rotary_for(grids: list[tuple[int, int, int]], config=None) -> torch.Tensor:
    """The tower's own 2D rotary angles for these grids (a tower with no blocks computes them)."""
    from dotocr.engine.model.configuration_dots import DotsVisionConfig
    from dotocr.engine.model.modeling_dots_ocr import DotsVisionTransformer

    config = config or DotsVisionConfig()
    with torch.device("meta"):
        tower = DotsVisionTransformer(DotsVisionConfig(**{**config.to_dict(), "num_hidden_layers": 0}))
    return tower.rotary_embedding(torch.tensor(grids), torch.device("cpu"))


def quadratic_estimate(variant: str, patches: int, dtype: torch.dtype, heads: int = 12) -> int:
    """Bytes an S x S variant holds at its peak (dense: mask, scores, a float32 copy, the float32 softmax)."""
    elem = torch.finfo(dtype).bits // 8
    if variant == "dense":
        return patches * patches * (elem + heads * (elem + 4 + 4))
    if variant == "sdpa3d":
        return patches * patches * heads * (elem + 4 + 4)
    return 0


def agreement_check() -> dict[str, float]:
    """Two images of different sizes at small width in fp32: the variants must give the same output."""
    from dotocr.engine.model.configuration_dots import DotsVisionConfig

    config = DotsVisionConfig(embed_dim=192, hidden_size=192, intermediate_size=256, num_attention_heads=12)
    grids = [(1, 8, 12), (1, 10, 6)]
    seqs = [t * h * w for t, h, w in grids]
    cu = [0, seqs[0], sum(seqs)]
    x = torch.randn(sum(seqs), config.embed_dim)
    rotary = rotary_for(grids, config)
    with torch.inference_mode():
        outs = {v: build_block(v, torch.float32, config)(x, cu, rotary) for v in VARIANTS}
    return {f"{v}_vs_ours_max_abs": float((outs[v] - outs["ours"]).abs().max()) for v in VARIANTS[1:]}


def child(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    dtype = DTYPES[args.dtype]
    side = args.size // PATCH
    grids = [(1, side, side)]
    patches = side * side
    block = build_block(args.variant, dtype)
    hidden = torch.randn(patches, block.attn.qkv.in_features, dtype=dtype)
    rotary = rotary_for(grids)
    cu = [0, patches]
    seconds, peaks = [], []
    with torch.inference_mode():
        for _ in range(args.repeats):
            with PeakMemory() as peak:
                took, out = timed(lambda: block(hidden, cu, rotary))
                del out
            seconds.append(took)
            peaks.append(peak.extra)
    return {"variant": args.variant, "dtype": args.dtype, "size": args.size, "patches": patches,
            "seconds": [round(s, 3) for s in seconds], "median_s": round(median(seconds), 3),
            "peak_extra_bytes": max(peaks), "peak_extra_all": peaks, "calibration": round(calibrate(), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1036, 1512])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import json

        print(json.dumps(child(args)))
        return

    report = {"machine": machine(), "agreement_fp32": agreement_check(), "cases": []}
    print(f"# {report['machine']}\n# variants agree (fp32, 2 images): {report['agreement_fp32']}", flush=True)
    print(f"{'dtype':5} {'px':>5} {'patches':>7} {'variant':7} {'peak extra':>12} {'s/block':>8}  runs",
          flush=True)
    for dtype in args.dtypes:
        for size in args.sizes:
            patches = (size // PATCH) ** 2
            for variant in args.variants:
                need = quadratic_estimate(variant, patches, DTYPES[dtype])
                if need and need > available_bytes() - 2 * GIB:
                    case = {"variant": variant, "dtype": dtype, "size": size, "patches": patches,
                            "skipped": f"needs ~{need / GIB:.1f} GiB, {available_bytes() / GIB:.1f} GiB free"}
                else:
                    case = run_child(Path(__file__), [
                        "--variant", variant, "--dtype", dtype, "--size", str(size),
                        "--repeats", str(args.repeats), "--threads", str(args.threads)])
                    case.setdefault("variant", variant)
                    case.setdefault("dtype", dtype)
                    case.setdefault("size", size)
                report["cases"].append(case)
                head = f"{dtype:5} {size:5} {patches:7} {variant:7}"
                if "peak_extra_bytes" in case:
                    print(f"{head} {case['peak_extra_bytes'] / MIB:9,.0f} MiB {case['median_s']:8.2f}  "
                          f"{case['seconds']}", flush=True)
                else:
                    print(f"{head} {case.get('skipped') or case.get('error')}", flush=True)
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    summarize(report)
    write_json(args.json, report)


def summarize(report: dict) -> None:
    """The issue's acceptance figures: ours/dense at each size and ours' growth from the smallest size."""
    by = {(c["dtype"], c["size"], c["variant"]): c for c in report["cases"] if "peak_extra_bytes" in c}
    summary = {}
    for (dtype, size, variant), case in sorted(by.items()):
        if variant != "ours":
            continue
        row = {"ours_mib": round(case["peak_extra_bytes"] / MIB, 1)}
        for other in ("dense", "sdpa3d"):
            if (dtype, size, other) in by:
                base = by[(dtype, size, other)]
                ratio = base["peak_extra_bytes"] / case["peak_extra_bytes"]
                row[f"{other}_over_ours_memory"] = round(ratio, 1)
                row[f"{other}_over_ours_time"] = round(base["median_s"] / case["median_s"], 2)
        sizes = sorted(s for d, s, v in by if d == dtype and v == "ours")
        first = by[(dtype, sizes[0], "ours")]
        row["memory_growth_vs_smallest"] = round(case["peak_extra_bytes"] / first["peak_extra_bytes"], 2)
        row["patch_growth_vs_smallest"] = round(case["patches"] / first["patches"], 2)
        summary[f"{dtype} {size}px"] = row
    report["summary"] = summary
    for key, row in summary.items():
        print(f"# {key}: {row}")


if __name__ == "__main__":
    main()
