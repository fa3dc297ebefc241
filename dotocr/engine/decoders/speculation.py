"""Model-free drafts for exact speculative decoding, and how many drafted tokens are worth checking.

Why: a decode step on a CPU streams every weight once, so checking a few guessed tokens in one batch can cost
little more than one token, and dots.ocr's structured answers repeat themselves by construction (layout JSON's
`"}, {"bbox": [`, HTML's `</td><td>`, Markdown rules). The guesses here come from the answer so far: the
longest recent n-gram that ends the answer is looked up, and what followed it last time is the draft (a
periodic tail extends itself). For the layout prompts a short sample of the answer's grammar is indexed before
the answer starts, so the first cell is drafted too.

The guesses never change the output: the token loop (`sampling.run_token_loop`) keeps a drafted token only
where the model, verifying the whole draft in one batch, picks the same token (greedy), or by the standard
acceptance rule when sampling. What this module decides is only how many tokens to draft: it keeps, per match
length, how often drafted tokens were accepted, and, per batch size, what a verification cost against one
plain step, both measured during the answer; it drafts k tokens only where the expected tokens per step over
the measured cost of k + 1 beats a plain step. On prose, where guesses rarely hold, it stops drafting, so plain
text is not slowed down; one probe in `EXPLORE_EVERY` keeps the estimate fresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from statistics import median

MAX_NGRAM = 8
"""Longest suffix looked up. Longer matches are likelier to continue the same way (a table row, a JSON key)."""
MAX_DRAFT = 8
"""Most tokens drafted at once: a verification batch holds at most MAX_DRAFT + 1 tokens."""
BUCKETS = 5
"""Acceptance is kept per matched length 1, 2, 3, 4-5 and 6 or more (`_bucket`)."""
PRIOR_ACCEPTANCE = 0.5
PRIOR_WEIGHT = 2.0
"""The acceptance a match length starts from, worth this many observed tokens."""
DECAY = 0.95
"""Each settled draft weighs the older ones of its match length down by this: the estimate follows the answer
from a table into prose within a few dozen drafts."""
PRIOR_COST_PER_TOKEN = 0.25
"""Assumed cost of each extra token in a verification batch, in plain steps, until measured (the issue's Xeon
measured 0.0-0.25 per extra token up to 9 tokens)."""
COST_SAMPLES = 9
"""Timings kept per batch size; their median is the size's cost."""
MIN_COST_SAMPLES = 3
"""Plain steps timed before any batch is compared with them."""
MIN_BATCH_SAMPLES = 2
"""A batch size's measured cost replaces the prior from this many timings on: few, since until then drafts are
kept to one token (see `known`), and on a CPU where batches are slow each of those timings costs a step."""
MARGIN = 1.03
"""A draft must promise this much over a plain step: a marginal guess is not worth the risk of a slow step."""
EXPLORE_EVERY = 16
"""When drafting does not pay at a match length, one match in this many is still checked with a 1-token draft,
so the estimate notices when the answer turns repetitive again (only where a 1-token draft can pay at all)."""

LAYOUT_SEED = (
    '[{"bbox": [100, 100, 900, 140], "category": "Page-header", "text": "A"}, '
    '{"bbox": [100, 200, 900, 240], "category": "Title", "text": "# A"}, '
    '{"bbox": [100, 300, 900, 340], "category": "Section-header", "text": "## A"}, '
    '{"bbox": [100, 400, 900, 440], "category": "List-item", "text": "- A"}, '
    '{"bbox": [100, 500, 900, 540], "category": "Formula", "text": "$$A$$"}, '
    '{"bbox": [100, 600, 900, 640], "category": "Table", "text": "<table><thead><tr><th>A</th><th>B</th></tr>'
    '</thead><tbody><tr><td>A</td><td>B</td></tr></tbody></table>"}, '
    '{"bbox": [100, 700, 900, 740], "category": "Picture"}, '
    '{"bbox": [100, 800, 900, 840], "category": "Caption", "text": "A"}, '
    '{"bbox": [100, 900, 900, 940], "category": "Footnote", "text": "A"}, '
    '{"bbox": [100, 1000, 900, 1040], "category": "Page-footer", "text": "A"}, '
    '{"bbox": [100, 1100, 900, 1140], "category": "Text", "text": "A"}, '
    '{"bbox": ['
)
"""A sample of the layout prompts' answer (dots.ocr's JSON cells, every category once, Text last as the most
common): indexed before the answer, it drafts the first cells' keys and punctuation."""
SEEDS = {"layout": LAYOUT_SEED, "layout-json": LAYOUT_SEED}
"""The grammar sample per prompt mode; the other modes write free text and get none."""


class NgramIndex:
    """Where each n-gram (n up to MAX_NGRAM) of a growing token list last ended, to continue it as it went."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._last: list[dict[tuple[int, ...], int]] = [{} for _ in range(MAX_NGRAM + 1)]

    def extend(self, tokens: Sequence[int]) -> None:
        history = self.tokens
        for token in tokens:
            history.append(token)
            end = len(history) - 1  # the new token follows every n-gram that ends just before it
            for n in range(1, min(MAX_NGRAM, end) + 1):
                self._last[n][tuple(history[end - n:end])] = end

    def continuation(self, limit: int) -> tuple[int, list[int]]:
        """(length of the longest suffix seen before, up to `limit` tokens that followed it); (0, []) if none."""
        history = self.tokens
        size = len(history)
        for n in range(min(MAX_NGRAM, size), 0, -1):
            start = self._last[n].get(tuple(history[size - n:]))
            if start is None:
                continue
            period = size - start  # the suffix recurs every `period` tokens: the draft may run past the end
            return n, [history[start + i % period] for i in range(limit)]
        return 0, []


class BatchCosts:
    """What feeding n tokens at once costs against one plain step, timed on one decoder and kept across its
    requests: it depends on the kernels, the CPU and its load, not on the answer (a CPU where batches cost
    several plain steps learns it once, not at every answer)."""

    def __init__(self) -> None:
        self._seconds: dict[int, deque[float]] = {}

    def record(self, batch: int, seconds: float) -> None:
        self._seconds.setdefault(batch, deque(maxlen=COST_SAMPLES)).append(seconds)

    def known(self) -> bool:
        """Whether a 2-token batch has been timed against plain steps: until then drafts stay at one token, so a
        decoder whose batches are slow (llama.cpp on some CPUs: 2-3 plain steps for two tokens) pays little
        to find out."""
        plain, pair = self._seconds.get(1), self._seconds.get(2)
        return bool(plain and pair and len(plain) >= MIN_COST_SAMPLES and len(pair) >= MIN_BATCH_SAMPLES)

    def cost(self, batch: int) -> float:
        """What verifying `batch` tokens costs in plain one-token steps: measured once timed often enough, else
        extrapolated from the largest measured smaller batch (costs grow slower than linearly, so this is
        optimistic: a batch size that looks worth it gets tried, and then measured)."""
        plain = self._seconds.get(1)
        one = median(plain) if plain and len(plain) >= MIN_COST_SAMPLES else 0.0
        if batch == 1 or one <= 0.0:
            return 1.0 + PRIOR_COST_PER_TOKEN * (batch - 1)
        for size in range(batch, 1, -1):
            times = self._seconds.get(size)
            if times and len(times) >= MIN_BATCH_SAMPLES:
                measured = max(median(times) / one, 1e-3)
                return measured if size == batch else 1.0 + (measured - 1.0) * (batch - 1) / (size - 1)
        return 1.0 + PRIOR_COST_PER_TOKEN * (batch - 1)


def _bucket(match: int) -> int:
    return 0 if match <= 1 else 1 if match == 2 else 2 if match == 3 else 3 if match <= 5 else 4


class Drafter:
    """Drafts for one answer, and the counts `--format json` reports. Not thread-safe: one per generation.

    The token loop calls `propose` before each verification and `settle` after it; `draft_tokens` counts the
    drafted tokens the model checked, `accepted_tokens` those it kept.
    """

    def __init__(self, seed: Sequence[int] = (), costs: BatchCosts | None = None) -> None:
        self._index = NgramIndex()
        self._index.extend(seed)
        self._seeded = len(seed)
        self.costs = costs if costs is not None else BatchCosts()
        self._accepted = [0.0] * BUCKETS
        self._tested = [0.0] * BUCKETS
        self._idle = [0] * BUCKETS
        self._pending: tuple[int, int] | None = None  # (bucket, drafted) of the draft being verified
        self.draft_tokens = 0
        self.accepted_tokens = 0

    def propose(self, answer: Sequence[int], room: int) -> list[int]:
        """Tokens to check after `answer` (every token generated so far), at most `room` of them."""
        index = self._index
        index.extend(answer[len(index.tokens) - self._seeded:])
        self._pending = None
        limit = min(MAX_DRAFT, room)
        if limit <= 0:
            return []
        match, continuation = index.continuation(limit)
        if not match:
            return []
        bucket = _bucket(match)
        size = self._worth(bucket, len(continuation) if self.costs.known() else 1)
        if size == 0:
            self._idle[bucket] += 1
            if self._idle[bucket] < EXPLORE_EVERY or 2.0 / self.costs.cost(2) <= MARGIN:
                return []  # not yet time to look again, or even a sure 1-token draft would not pay
            size = 1
        self._idle[bucket] = 0
        self._pending = (bucket, size)
        return continuation[:size]

    def settle(self, drafted: int, accepted: int, seconds: float) -> None:
        """The model checked `drafted` tokens (fed with the token before them) in `seconds` and kept `accepted`."""
        self.costs.record(drafted + 1, seconds)
        if not drafted or self._pending is None:
            return
        bucket = self._pending[0]
        self._accepted[bucket] = DECAY * self._accepted[bucket] + accepted
        self._tested[bucket] = DECAY * self._tested[bucket] + accepted + (accepted < drafted)
        self.draft_tokens += drafted
        self.accepted_tokens += accepted

    def acceptance(self, bucket: int) -> float:
        """The estimated chance that a drafted token at this match length is kept, given the ones before it."""
        return ((self._accepted[bucket] + PRIOR_ACCEPTANCE * PRIOR_WEIGHT)
                / (self._tested[bucket] + PRIOR_WEIGHT))

    def _worth(self, bucket: int, available: int) -> int:
        """The draft length with the most expected tokens per unit of time, 0 when no draft beats a plain step."""
        chance = self.acceptance(bucket)
        best, best_rate = 0, MARGIN
        expected, reach = 1.0, 1.0
        for size in range(1, available + 1):
            reach *= chance
            expected += reach
            rate = expected / self.costs.cost(size + 1)
            if rate > best_rate:
                best, best_rate = size, rate
        return best


def seed_for(prompt: str) -> str:
    """The grammar sample indexed before the answer of a prompt mode ('' for free text)."""
    return SEEDS.get(prompt, "")


__all__ = ["BatchCosts", "Drafter", "NgramIndex", "seed_for"]
