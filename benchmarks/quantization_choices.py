"""Which modules should stay 16-bit under 4-bit loading? Memory each one saves against the error it adds.

    python benchmarks/quantization_choices.py --json out.json

Candidates (real dims, random weights with the model's init std 0.02): `lm_head` (151936 x 1536), the vision
`merger` (Linear 6144->6144, GELU, Linear 6144->1536) and the patch conv (1536 x 3 x 14 x 14). For context the
same figures are given for modules that are quantized anyway: a decoder MLP and a vision block's qkv.

Quantization is bitsandbytes' own NF4 with double quantization and block size 64, as `load_checkpoint` asks
for, done on the CPU. Bytes saved are the real sizes of the packed weight plus its quantization statistics
against the 16-bit weight. Errors are relative (||y_4bit - y_16bit|| / ||y_16bit||) on inputs shaped like the
module's real ones, plus, for lm_head, how often the greedy token changes:
- on random final hidden states (no preferred token: the worst case, top-1 and top-2 nearly tie),
- on hidden states where the 16-bit head is p sure of one token (p = 0.5, 0.9, 0.99), as a trained model is
  on most OCR tokens.
The reference is the same module in float32 from the fp16 weights; fp16 rounding alone is shown as the
floor. Large products use the dequantized weight; a check at the start shows that equals bnb's own Linear4bit
forward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import MIB, machine, write_json  # noqa: E402

INIT_STD = 0.02
BLOCK = 64


def nf4(weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The weight after a NF4 round trip (fp16) and the bytes bitsandbytes stores for it."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    packed, state = quantize_4bit(weight.half().contiguous(), blocksize=BLOCK, compress_statistics=True,
                                  quant_type="nf4")
    stored = packed.numel() * packed.element_size()
    stored += state.absmax.numel() * state.absmax.element_size()
    if state.nested:
        inner = state.state2
        stored += inner.absmax.numel() * inner.absmax.element_size() + inner.code.numel() * 4 + 4
    stored += state.code.numel() * 4
    return dequantize_4bit(packed, state).view_as(weight), stored


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def random_weight(out_features: int, in_features: int) -> torch.Tensor:
    return (torch.randn(out_features, in_features) * INIT_STD).half()


def rms_normed(rows: int, dim: int) -> torch.Tensor:
    """What an RMSNorm (weight 1) hands on: unit root-mean-square rows."""
    x = torch.randn(rows, dim)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))


def check_against_bnb_linear() -> float:
    """Relative gap between `x @ dequantized.T` and bitsandbytes' Linear4bit forward (fp16 compute)."""
    import bitsandbytes as bnb

    torch.manual_seed(1)
    weight = random_weight(512, 1536)
    layer = bnb.nn.Linear4bit(1536, 512, bias=False, compute_dtype=torch.float16, quant_type="nf4",
                              compress_statistics=True)
    layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4",
                                     compress_statistics=True, blocksize=BLOCK)
    layer = layer.to("cpu")
    x = rms_normed(32, 1536).half()
    deq, _ = nf4(weight)
    with torch.inference_mode():
        return rel(layer(x), x.float() @ deq.float().T)


def linear_case(name: str, out_features: int, in_features: int, x: torch.Tensor, note: str) -> dict:
    weight = random_weight(out_features, in_features)
    deq, stored = nf4(weight)
    ref = x @ weight.float().T
    return {"module": name, "note": note, "params": weight.numel(), "bytes_16bit": weight.numel() * 2,
            "bytes_4bit": stored, "saved_bytes": weight.numel() * 2 - stored,
            "weight_rel_error": rel(deq, weight), "output_rel_error": rel(x @ deq.float().T, ref),
            "fp16_floor_rel_error": rel(x.half().float() @ weight.float().T, ref)}


def lm_head_case(tokens: int, probabilities: tuple[float, ...]) -> dict:
    """lm_head: bytes, relative logit error, and how often greedy decoding would pick another token."""
    vocab, hidden = 151936, 1536
    weight = random_weight(vocab, hidden)
    deq, stored = nf4(weight)
    w32, q32 = weight.float(), deq.float()
    del deq
    h = rms_normed(tokens, hidden)
    ref = h @ w32.T
    quant = h @ q32.T
    case = {"module": "lm_head", "note": "vocabulary projection; decides every generated token",
            "params": weight.numel(), "bytes_16bit": weight.numel() * 2, "bytes_4bit": stored,
            "saved_bytes": weight.numel() * 2 - stored, "weight_rel_error": rel(q32, w32),
            "output_rel_error": rel(quant, ref), "top1_flip_random": flip_rate(ref, quant),
            "top1_flip_fp16_floor_random": flip_rate(ref, h.half().float() @ w32.T),
            "kl_random": kl(ref, quant), "top1_flip_at_p": {}, "kl_at_p": {}}
    # Plant a winner: h + beta * w_t / |w_t|, beta chosen so the 16-bit softmax gives token t probability p.
    targets = torch.randint(0, vocab, (tokens,))
    direction = w32[targets] / w32[targets].norm(dim=-1, keepdim=True)
    shift_ref, shift_quant = direction @ w32.T, direction @ q32.T
    for p in probabilities:
        beta = solve_beta(ref, shift_ref, targets, p)
        logits_ref = ref + beta[:, None] * shift_ref
        logits_quant = quant + beta[:, None] * shift_quant
        case["top1_flip_at_p"][str(p)] = flip_rate(logits_ref, logits_quant)
        case["kl_at_p"][str(p)] = kl(logits_ref, logits_quant)
    return case


def solve_beta(base: torch.Tensor, shift: torch.Tensor, targets: torch.Tensor, p: float) -> torch.Tensor:
    """Per row, the beta at which softmax(base + beta * shift)[target] == p (bisection; monotone in beta)."""
    low, high = torch.zeros(base.shape[0]), torch.full((base.shape[0],), 200.0)
    rows = torch.arange(base.shape[0])
    for _ in range(40):
        mid = (low + high) / 2
        prob = torch.softmax(base + mid[:, None] * shift, dim=-1)[rows, targets]
        low, high = torch.where(prob < p, mid, low), torch.where(prob < p, high, mid)
    return (low + high) / 2


def kl(ref: torch.Tensor, other: torch.Tensor) -> float:
    """Mean KL(p_ref || p_other) in nats over rows: how much the next-token distribution moves."""
    log_ref, log_other = F.log_softmax(ref, -1), F.log_softmax(other, -1)
    return float((log_ref.exp() * (log_ref - log_other)).sum(-1).mean())


def flip_rate(ref: torch.Tensor, other: torch.Tensor) -> float:
    return float((ref.argmax(-1) != other.argmax(-1)).float().mean())


def merger_case(windows: int) -> dict:
    """The vision merger (LayerNorm -> Linear -> GELU -> Linear) with both Linears quantized."""
    embed, hidden = 1536, 1536
    width = embed * 4
    w1, w2 = random_weight(width, width), random_weight(hidden, width)
    b1, b2 = torch.randn(width) * INIT_STD, torch.randn(hidden) * INIT_STD
    (q1, s1), (q2, s2) = nf4(w1), nf4(w2)
    x = F.layer_norm(rms_normed(windows * 4, embed), (embed,), eps=1e-6).view(windows, width)

    def forward(a: torch.Tensor, b: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        return F.gelu(inp @ a.float().T + b1) @ b.float().T + b2

    ref = forward(w1, w2, x)
    params = w1.numel() + w2.numel()
    return {"module": "vision_tower.merger", "note": "folds each 2x2 patch window into one decoder token",
            "params": params, "bytes_16bit": params * 2, "bytes_4bit": s1 + s2,
            "saved_bytes": params * 2 - s1 - s2,
            "weight_rel_error": rel(torch.cat([q1.flatten(), q2.flatten()]),
                                    torch.cat([w1.flatten(), w2.flatten()])),
            "output_rel_error": rel(forward(q1, q2, x), ref),
            "fp16_floor_rel_error": rel(forward(w1, w2, x.half().float()), ref)}


def text_patches() -> torch.Tensor:
    """Normalised 14x14 patches of a rendered page of text: mostly white, as the model's real input."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (448, 224), "white")
    draw = ImageDraw.Draw(image)
    for row in range(14):
        draw.text((6, 4 + row * 15), "The quick brown fox jumps over the lazy dog 0123456789 ;:,.",
                  fill="black")
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(224, 448, 3).float() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    return ((pixels - mean) / std).permute(2, 0, 1).unsqueeze(0)


def patch_conv_case() -> dict:
    """The Conv2d patch embedding. bitsandbytes only replaces Linear layers, so this is what it would cost."""
    weight = (torch.randn(1536, 3, 14, 14) * INIT_STD).half()
    deq, stored = nf4(weight.view(1536, -1))
    x = text_patches()
    ref = F.conv2d(x, weight.float(), stride=14)
    return {"module": "vision_tower.patch_embed.patchifier.proj",
            "note": "Conv2d: bnb has no 4-bit conv layer",
            "params": weight.numel(), "bytes_16bit": weight.numel() * 2, "bytes_4bit": stored,
            "saved_bytes": weight.numel() * 2 - stored, "weight_rel_error": rel(deq, weight.view(1536, -1)),
            "output_rel_error": rel(F.conv2d(x, deq.view_as(weight).float(), stride=14), ref),
            "fp16_floor_rel_error": rel(F.conv2d(x.half().float(), weight.float(), stride=14), ref)}


def footprint() -> dict:
    """Weight bytes of the whole model under the current choice, to put the savings in proportion."""
    from dotocr.engine.model.configuration_dots import DotsOCRConfig
    from dotocr.engine.model.modeling_dots_ocr import DotsOCRForCausalLM

    with torch.device("meta"):
        model = DotsOCRForCausalLM(DotsOCRConfig())
    sizes = {"linear_quantized": 0, "lm_head": 0, "merger": 0, "other_16bit": 0}
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            full = f"{name}.{pname}"
            if full.startswith("lm_head"):
                sizes["lm_head"] += param.numel()
            elif full.startswith("vision_tower.merger.mlp") and pname == "weight":
                sizes["merger"] += param.numel()
            elif isinstance(module, torch.nn.Linear) and pname == "weight":
                sizes["linear_quantized"] += param.numel()
            else:
                sizes["other_16bit"] += param.numel()
    # NF4 + double quantization stores 0.5 byte per weight plus ~0.127 bit of statistics.
    nf4_bytes = lambda n: n * (0.5 + (1 + 4 / 256) / BLOCK)  # noqa: E731
    kept = sizes["lm_head"] + sizes["merger"]
    current = nf4_bytes(sizes["linear_quantized"]) + 2 * (kept + sizes["other_16bit"])
    return {"params": sizes, "weights_bytes_current_choice": round(current),
            "weights_bytes_all_linear_4bit": round(current - 2 * kept + nf4_bytes(kept))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512, help="hidden states fed to lm_head")
    parser.add_argument("--windows", type=int, default=1369, help="merger inputs (1369 = a 1036 px crop)")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    report = {"machine": machine(), "dequantized_vs_bnb_linear4bit": check_against_bnb_linear()}
    print(f"# {report['machine']}\n# dequantized matmul vs bnb Linear4bit forward: "
          f"{report['dequantized_vs_bnb_linear4bit']:.2e} relative", flush=True)
    context = [
        linear_case("model.layers.N.mlp.up_proj", 8960, 1536, rms_normed(256, 1536), "quantized anyway"),
        linear_case("model.layers.N.mlp.down_proj", 1536, 8960, F.silu(torch.randn(256, 8960)),
                    "quantized anyway"),
        linear_case("vision_tower.blocks.N.attn.qkv", 4608, 1536, rms_normed(256, 1536), "quantized anyway"),
    ]
    report["cases"] = [lm_head_case(args.tokens, (0.3, 0.5, 0.9, 0.99)), merger_case(args.windows),
                       patch_conv_case(), *context]
    report["footprint"] = footprint()
    for case in report["cases"]:
        extra = ""
        if "top1_flip_random" in case:
            extra = (f"  top-1 flips: random {case['top1_flip_random']:.1%} (fp16 floor "
                     f"{case['top1_flip_fp16_floor_random']:.1%}), at p: "
                     + ", ".join(f"{p}: {v:.1%}" for p, v in case["top1_flip_at_p"].items())
                     + f"; KL random {case['kl_random']:.4f} nats")
        else:
            extra = f"  (fp16 floor {case['fp16_floor_rel_error']:.1e})"
        print(f"{case['module']:42} saves {case['saved_bytes'] / MIB:7.1f} MiB "
              f"({case['bytes_16bit'] / MIB:.1f} -> {case['bytes_4bit'] / MIB:.1f}); output error "
              f"{case['output_rel_error']:.3f}{extra}", flush=True)
    fp = report["footprint"]
    print(f"# weights: current choice {fp['weights_bytes_current_choice'] / MIB:,.0f} MiB, "
          f"all Linear 4-bit {fp['weights_bytes_all_linear_4bit'] / MIB:,.0f} MiB")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
