"""What the loop guard costs per generated token, and that the cost does not grow with the sequence.

    python benchmarks/loop_guard_cost.py --json out.json

`LoopGuard.push` over loop-free token streams of three kinds, timed over the first 1000 tokens and over
tokens 15000-16000 of the same stream (best of 5): ordinary text (ids drawn from a 150k vocabulary),
a long HTML table of short numbers (few distinct tokens, many partial repeats: the guard's worst case
among real content, as candidate periods stay alive), and a mix of both. Thresholds are raised so that
nothing trips and every token goes through the whole rule set. Also the whole per-step cost of the guard
inside `generate()`: the torch decoder's per-token criterion (slice, `.tolist()`, the engine's `TokenPipeline.push`)
on a growing 1 x (3000 + n) id tensor, the shape a real step hands it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import machine, write_json  # noqa: E402

from dotocr.engine.decoders.loop_guard import LoopGuard  # noqa: E402

LENGTH = 16000


def streams() -> dict[str, list[int]]:
    rng = random.Random(0)
    ordinary = [rng.randint(0, 151000) for _ in range(LENGTH)]
    digits = list(range(15, 25))
    table: list[int] = []
    while len(table) < LENGTH:  # <td> n </td> with 1-3 digit numbers, a row every 6 cells
        table += [100, 101] + [rng.choice(digits) for _ in range(rng.randint(1, 3))] + [102, 101]
        if rng.random() < 1 / 6:
            table += [102, 103, 104, 103]
    mixed: list[int] = []
    while len(mixed) < LENGTH:
        start = rng.randrange(LENGTH - 300)
        mixed += (ordinary if rng.random() < 0.5 else table)[start:start + rng.randint(50, 300)]
    return {"ordinary text": ordinary, "numeric table": table[:LENGTH], "mixed": mixed[:LENGTH]}


def per_token(tokens: list[int], first: slice, last: slice) -> tuple[float, float]:
    best_first = best_last = float("inf")
    for _ in range(5):
        guard = LoopGuard(short_span=10**9, rich_copies=10**9, loose_copies=10**9, count_copies=10**9,
                          wander_window=10**6)
        timings = []
        position = 0
        for part in (first, last):
            for token in tokens[position:part.start]:
                guard.push(token)
            started = time.perf_counter()
            for token in tokens[part]:
                guard.push(token)
            timings.append((time.perf_counter() - started) / (part.stop - part.start))
            position = part.stop
        assert not guard.triggered
        best_first, best_last = min(best_first, timings[0]), min(best_last, timings[1])
    return best_first, best_last


def stopping_criteria_call(steps: int = 2000) -> float:
    import torch

    from dotocr.engine.decoders.generation import TokenPipeline
    from dotocr.engine.decoders.torch_decoder import _PerToken

    tokens = streams()["mixed"][:steps]
    prompt = [7] * 3000
    sequence = torch.tensor([prompt + tokens])
    best = float("inf")
    for _ in range(5):
        pipeline = TokenPipeline(tokenizer=None, eos_token_ids=(), max_new_tokens=steps + 1)
        guard = _PerToken(len(prompt), pipeline)
        views = [sequence[:, : len(prompt) + end] for end in range(1, steps + 1)]
        started = time.perf_counter()
        for view in views:
            guard(view, None)
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    report = {"machine": machine(), "per_token_us": {}}
    print(f"# {report['machine']}")
    for name, tokens in streams().items():
        first, last = per_token(tokens, slice(0, 1000), slice(15000, 16000))
        report["per_token_us"][name] = {"tokens_0_1000": round(first * 1e6, 2),
                                        "tokens_15000_16000": round(last * 1e6, 2)}
        print(f"{name:14s} {first * 1e6:6.2f} us/token over tokens 0-1000, {last * 1e6:6.2f} over 15000-16000")
    report["stopping_criteria_call_us"] = round(stopping_criteria_call() * 1e6, 2)
    print(f"per-token criterion per generate() step: {report['stopping_criteria_call_us']:.2f} us")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
