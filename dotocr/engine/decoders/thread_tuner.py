"""How many threads llama.cpp decodes with: chosen from measured token times, while it decodes.

llama.cpp's threads meet at a barrier after every operation of a token (hundreds per token) and spin there, so
when another process takes one of the cores every barrier waits for the thread that lost it. Measured on our
2-core machine at load 3-4.5 (docs/performance.md, section 7): one thread decoded 2.9-3.2 tok/s, two threads
0.5-1.2. On an idle machine two threads win. Which count wins changes with what else the machine is doing (a
browser, a compile, a second OCR), so the decoder measures instead of guessing.

It decodes with every thread and watches the token times. It tries half the threads for a couple of tokens
when tokens get much slower than the fastest recent one (another process took a core), and after
REPROBE_AFTER_S seconds of decoding without a measurement (a machine busy from the start looks steady too),
and keeps whichever count was faster. A short request on an idle machine never probes, so it decodes exactly
as llama.cpp's own tools do.

The thread count does not change what is computed (ggml gives each output row to one thread whatever the
count), only how fast: the tokens are the same. Prompt batches keep every thread: there the threads have enough
work between barriers for waiting to matter little.
"""

from __future__ import annotations

from collections import deque
from statistics import median

PROBE_TOKENS = 2
"""Tokens timed per candidate count: enough to see the 2-4x a busy core costs, few enough to be cheap."""
REPROBE_AFTER_S = 8.0
"""Seconds of decoding between measurements when nothing looks wrong: an idle machine pays two tokens at
~1.7x their time every 8 s (about 1 %); a machine busy from the start is caught within 8 s."""
SLOWDOWN = 1.5
"""Tokens this much slower than the fastest recent one (the median of the last few) mean something else took
a core: measure now. Token times on an idle machine stay well within it (the KV cache grows slowly)."""
RECENT_TOKENS = 32
GIVE_UP_RATIO = 2.0
"""A candidate whose first token is this much slower than the current count's is dropped without a second."""


class ThreadTuner:
    """Picks the decode thread count among `max_threads` and half of it, by measured seconds per token.

    One per decoder, kept across requests (a tray daemon decodes for hours): the measurement follows the
    machine, not the request. Not thread-safe; the decoder's lock serialises its use. `adaptive=False` always
    answers `max_threads` (benchmarks compare against it).
    """

    def __init__(self, max_threads: int, *, adaptive: bool = True) -> None:
        max_threads = max(1, int(max_threads))
        half = max(1, max_threads // 2)
        self.candidates = [max_threads, half] if adaptive and half != max_threads else [max_threads]
        self.best = max_threads
        self._queue: list[int] = []
        self._samples: dict[int, list[float]] = {}
        self._recent: deque[float] = deque(maxlen=RECENT_TOKENS)
        self._since_probe = 0.0

    def threads(self) -> int:
        """The count to decode the next token with."""
        return self._queue[0] if self._queue else self.best

    @property
    def probing(self) -> bool:
        """A measurement is under way: the next decodes should be single tokens (drafts wait)."""
        return bool(self._queue)

    def record(self, threads: int, seconds: float, *, tokens: int = 1) -> None:
        """How long a decode of `tokens` generated tokens (a verified draft when more than one) took with
        `threads`. Only single tokens are compared; a batch's time only counts towards the next measurement."""
        if tokens != 1:
            self._since_probe += seconds
            if len(self.candidates) > 1 and not self._queue and self._since_probe >= REPROBE_AFTER_S:
                # no fresh single-token times to stand for the current count: both are measured
                self._samples = {}
                self._queue = [self.best, *(n for n in self.candidates if n != self.best)]
            return
        if self._queue and self._queue[0] == threads:
            self._take_probe(threads, seconds)
            return
        self._recent.append(seconds)
        self._since_probe += seconds
        if len(self.candidates) > 1 and (self._since_probe >= REPROBE_AFTER_S or self._slowed_down()):
            # the current count's last tokens are its fresh measurement; only the other count is tried
            self._samples = {self.best: list(self._recent)[-PROBE_TOKENS:]}
            self._queue = [n for n in self.candidates if n != self.best]

    def _slowed_down(self) -> bool:
        """At every thread, tokens got much slower (at half of them the periodic measurement suffices)."""
        if self.best != self.candidates[0] or len(self._recent) < 2 * PROBE_TOKENS:
            return False
        last = list(self._recent)[-PROBE_TOKENS - 1:]
        return median(last) > SLOWDOWN * min(self._recent)

    def _take_probe(self, threads: int, seconds: float) -> None:
        samples = self._samples.setdefault(threads, [])
        samples.append(seconds)
        current = self._samples.get(self.best)
        hopeless = threads != self.best and bool(current) and seconds > GIVE_UP_RATIO * median(current)
        if len(samples) < PROBE_TOKENS and not hopeless:
            return
        self._queue.pop(0)
        if not self._queue:
            self.best = min(self._samples, key=lambda n: median(self._samples[n]))
            self._since_probe = 0.0
            self._recent.clear()
