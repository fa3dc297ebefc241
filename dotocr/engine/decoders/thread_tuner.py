"""How many threads llama.cpp decodes with: chosen from measured token times, while it decodes.

llama.cpp's threads meet at a barrier after every operation of a token (hundreds per token) and spin there, so
when another process takes one of the cores every barrier waits for the thread that lost it. Measured on our
2-core machine at load 3-4.5 (docs/performance.md, section 7): one thread decoded 2.9-3.2 tok/s, two threads
0.5-1.2. On an idle machine two threads win. Which count wins changes with what else the machine is doing (a
browser, a compile, a second OCR), so the decoder measures instead of guessing: it times a couple of tokens at
each candidate count, decodes at the fastest, and measures again after REPROBE_AFTER_S seconds of decoding.

The thread count does not change what is computed (ggml gives each output row to one thread whatever the
count), only how fast: the tokens are the same. Prompt batches keep every thread: there the threads have enough
work between barriers for waiting to matter little.
"""

from __future__ import annotations

from statistics import median

PROBE_TOKENS = 2
"""Tokens timed per candidate count: enough to see a 2x difference, few enough to cost ~1 % on an idle machine."""
REPROBE_AFTER_S = 8.0
"""Seconds of decoding between measurements: short enough to follow a machine that became busy, long enough
that probing the slower count on an idle machine costs about 1 % (two tokens at +70 % every ~8 s)."""
GIVE_UP_RATIO = 2.0
"""A candidate whose first token is this much slower than the current best is dropped without a second one."""


class ThreadTuner:
    """Picks the decode thread count among `max_threads` and half of it, by measured seconds per token.

    One per decoder, kept across requests (a tray daemon decodes for hours): the measurement follows the
    machine, not the request. Not thread-safe; the decoder's lock serialises its use.
    """

    def __init__(self, max_threads: int, *, adaptive: bool = True) -> None:
        max_threads = max(1, int(max_threads))
        half = max(1, max_threads // 2)
        self.candidates = [max_threads, half] if adaptive and half != max_threads else [max_threads]
        self.best = max_threads
        self._queue: list[int] = list(self.candidates) if len(self.candidates) > 1 else []
        self._samples: dict[int, list[float]] = {}
        self._since_probe = 0.0

    def threads(self) -> int:
        """The count to decode the next token with."""
        return self._queue[0] if self._queue else self.best

    def record(self, threads: int, seconds: float) -> None:
        """How long a token decoded with `threads` took."""
        if self._queue and self._queue[0] == threads:
            samples = self._samples.setdefault(threads, [])
            samples.append(seconds)
            best = self._samples.get(self.best)
            hopeless = threads != self.best and bool(best) and seconds > GIVE_UP_RATIO * median(best)
            if len(samples) >= PROBE_TOKENS or hopeless:
                self._queue.pop(0)
                if not self._queue:
                    self.best = min(self._samples, key=lambda n: median(self._samples[n]))
                    self._since_probe = 0.0
            return
        self._since_probe += seconds
        if len(self.candidates) > 1 and self._since_probe >= REPROBE_AFTER_S:
            # the current best first: its fresh time is what the other is compared with
            self._queue = [self.best, *(n for n in self.candidates if n != self.best)]
            self._samples = {}
