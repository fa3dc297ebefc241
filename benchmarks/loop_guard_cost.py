"""What the loop guard costs per generated token, and that the cost does not grow with the sequence.

    python benchmarks/loop_guard_cost.py --json out.json

`LoopGuard.push` over loop-free token streams of three kinds, timed over the first 1000 tokens and over
tokens 15000-16000 of the same stream (best of 5): ordinary text (ids drawn from a 150k vocabulary),
a long HTML table of short numbers (few distinct tokens, many partial repeats: the guard's worst case
among real content, as candidate periods stay alive), and a mix of both. Thresholds are raised so that
nothing trips and every token goes through the whole rule set. Also the whole per-token cost around a
decoder's feed: the shared token loop (picking, the token's probability) and the engine's `TokenPipeline.push`,
on a stand-in model whose feed costs nothing.
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


def token_loop_call(steps: int = 2000) -> float:
    """Seconds per token that the shared token loop and the pipeline add around a decoder's feed (a stand-in
    model whose feed costs nothing, 64-token vocabulary, no drafter)."""
    import numpy as np

    from dotocr.engine.decoders.generation import TokenPipeline
    from dotocr.engine.decoders.sampling import run_token_loop

    tokens = [t % 64 for t in streams()["mixed"][:steps]]
    rows = np.zeros((steps + 1, 64), dtype=np.float32)
    rows[np.arange(steps), tokens] = 5.0
    best = float("inf")
    for _ in range(5):
        pipeline = TokenPipeline(tokenizer=None, eos_token_ids=(), max_new_tokens=steps)
        fed = iter(rows[1:, None])
        started = time.perf_counter()
        run_token_loop(rows[0], lambda batch, fed=fed: next(fed), max_new_tokens=steps, on_token=pipeline)
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
    report["token_loop_call_us"] = round(token_loop_call() * 1e6, 2)
    print(f"token loop and pipeline per token (stand-in model): {report['token_loop_call_us']:.2f} us")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
