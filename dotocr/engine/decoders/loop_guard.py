"""The loop guard: notices, token by token, that the model has fallen into a loop, so generation can stop.

dots.ocr loops in a few typical ways: one token or a short block again and again (dot leaders, underscores,
`<td></td>` cells), one longer block again and again (an empty table row, a sentence), a tail that cycles
among a few short patterns with a shifting phase ("wandering"), and a list whose frame stays fixed while a
number counts up. Each loop otherwise runs to max_new_tokens, minutes on a small GPU. The guard sees token
ids only (pure Python, no tokenizer), so the same object serves every decoder: the engine makes one
`LoopGuard` per generation and calls `push()` with each generated token (eos excluded).

Rules, and why these thresholds. Token counts below are those of the real Qwen2 tokenizer that dots.ocr
uses; the legitimate examples are the corpus in tests/test_loop_guard.py.

* **Short block** (an exact period of 1..SHORT_PERIOD = 3 tokens): stopped once the periodic stretch spans
  SHORT_SPAN = 64 tokens, so within 64 tokens of the loop's start. Real runs of short blocks are short in
  tokens because the tokenizer packs repeated punctuation: a 200-column rule of box-drawing characters is
  25 tokens, a dot leader a few, 7 repeated Chinese characters 2. The widest real case is a Markdown
  separator row, two tokens (`|`, `---`) per column: up to 31 columns pass, a wider one would be cut.
  Why only up to 3 tokens: an empty HTML cell `<td></td>` is the 4-token block `><` `td` `></` `td`, and
  a real form (an attendance sheet, a calendar) has a row of 31 empty cells, 124 tokens; it must pass.
* **Longer block** (an exact period of 4..MAX_PERIOD = 1024 tokens): stopped after LOOSE_COPIES = 40
  copies when the block has fewer than RICH_DISTINCT = 12 different tokens (markup, empty cells, rows of
  zeros: a real form has 30 empty rows, a real attendance row 31 empty cells), or after RICH_COPIES = 16
  copies when it has 12 or more (a sentence, a filled table row: real pages repeat one up to about 11
  times, as in a table of 11 identical rows). A loop of a 20-token empty row is stopped at 800 tokens,
  of a 30-token sentence at 480, far below the default limit. A rich block longer than 128 tokens (a
  paragraph, or two variants of a row taking turns, 260 tokens a pair) is stopped once its copies span
  LONG_SPAN = 2048 tokens, and after at least LONG_COPIES = 4 copies: 8 copies of 257 tokens, 4 of 1024,
  all within the default 4096 (16 copies of 300 tokens would not be). Real pages do not repeat a paragraph
  of 130 tokens eight times over.
* **Wandering**: the last WANDER_WINDOW = 96 tokens use at most WANDER_DISTINCT = 4 different tokens, each
  more than once (a token the tail left behind does not count as part of it), and the last half window held
  no exact periodic stretch of half a window or more (an exact run belongs to the rules above: the 31 empty
  cells use 3 different tokens). A tail cycling among patterns like `x`, `yx`, `xyy` with a shifting phase,
  or drawing at random from 4 tokens, has no exact period, so only this rule sees it. Real text this poor
  over 96 tokens and not periodic is rare: a long binary string (`0`, `1`, space) is the one case known to be
  cut.
* **Counting** (a fixed frame with changing numbers, `1. 2. 3. ...`, or several columns counting at once,
  `| 17 | 2017 |`, `<td>17</td><td>119</td>`): a near-exact period of FUZZY_MIN_PERIOD = 3 .. MAX_PERIOD
  tokens where each copy differs from the one before in up to COUNT_BURSTS = 4 bursts of at most
  FUZZY_BURST = 3 tokens each (the digits that changed; Qwen2 writes every digit as its own token), and at
  each place in the copy the last changed token (a units digit) comes back every COUNT_CYCLE = 10 copies.
  The last part is what tells counting from a table of arbitrary numbers, whose cells also differ by bursts
  of digits. Stopped after COUNT_COPIES = 100 such copies in one run, or COUNT_COPIES / n when n places count
  in lockstep (two counters together are far rarer on a real page than one: `<td>i</td><td>7i</td>` is
  stopped near row 80, before 4096 tokens). A run cannot pass a change in the number of digits (the copy
  grows by a token), so a list counting from 1 is stopped near item 210: a real list (one to 60 is in the
  corpus) or a numbered form never gets there.

Where the loop began is the start of the periodic stretch (its first copy), or for a wandering tail the
first token of the poor stretch; `keep()` returns the tokens before it plus one copy of the block (for a
wandering tail: up to the first return of its opening token).

Cost: candidate periods come only from the distance to the previous occurrence of the new token and of the
new token pair (two dictionary look-ups), and only live candidates are compared (in ordinary text they
die within a token or two), so a token costs a handful of dictionary steps, whatever the sequence length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

SHORT_PERIOD = 3
SHORT_SPAN = 64
MAX_PERIOD = 1024
RICH_DISTINCT = 12
RICH_COPIES = 16
LOOSE_COPIES = 40
LONG_PERIOD = 128
LONG_SPAN = 2048
LONG_COPIES = 4
WANDER_WINDOW = 96
WANDER_DISTINCT = 4
FUZZY_MIN_PERIOD = 3
FUZZY_BURST = 3
FUZZY_GAP = 2
COUNT_CYCLE = 10
COUNT_COPIES = 100
COUNT_BURSTS = 4
MAX_CANDIDATES = 12

_PAIR_SHIFT = 32  # token ids are far below 2**32: a pair (a, b) is the int a << 32 | b, no tuple per token


class _Run:
    """One candidate period: tokens[j] == tokens[j - period] for every j since `exact_from`, and since `start`
    apart from bursts of at most FUZZY_BURST changed tokens with more than FUZZY_GAP matches between them."""

    __slots__ = ("period", "start", "exact_from", "burst_start", "burst_end", "burst_last", "history", "cycled",
                 "rich")

    def __init__(self, period: int, index: int) -> None:
        self.period = period
        self.start = index
        self.exact_from = index
        self.burst_start = -1
        self.burst_end = -1
        self.burst_last: int | None = None  # last changed token of the current burst (a units digit)
        self.history: dict[int, deque[int]] = {}  # place in the copy -> that token for the previous bursts there
        self.cycled = 0  # bursts whose last token equals the one COUNT_CYCLE copies before, at the same place
        self.rich: bool | None = None  # whether the block has RICH_DISTINCT tokens; decided once, when needed

    def close_burst(self) -> bool:
        """Record the burst that just ended; False when it breaks the count cycle (then this is no count)."""
        place = (self.burst_end - self.start) % self.period  # where its last token (the units digit) stands
        history = self.history.get(place)
        if history is None:
            if len(self.history) == COUNT_BURSTS:
                return False  # changes all over the copy: arbitrary numbers, not a count
            history = self.history[place] = deque(maxlen=COUNT_CYCLE)
        if len(history) == COUNT_CYCLE:
            if history[0] != self.burst_last:
                return False
            self.cycled += 1
        history.append(self.burst_last)
        return True

    @property
    def counted(self) -> int:
        """Copies that kept the count cycle at every place that changes."""
        return self.cycled // max(1, len(self.history))


class LoopGuard:
    """Feed generated tokens one at a time with `push()`; it returns True once the tail is a loop (see module doc)."""

    def __init__(self, *, short_span: int = SHORT_SPAN, rich_copies: int = RICH_COPIES,
                 loose_copies: int = LOOSE_COPIES, wander_window: int = WANDER_WINDOW,
                 wander_distinct: int = WANDER_DISTINCT, count_copies: int = COUNT_COPIES,
                 max_period: int = MAX_PERIOD, long_span: int = LONG_SPAN) -> None:
        if min(short_span, rich_copies, loose_copies, wander_window, count_copies, long_span) < 2 or max_period < 1:
            raise ValueError("spans and copies must be at least 2, max_period at least 1")
        self.short_span, self.rich_copies, self.loose_copies = short_span, rich_copies, loose_copies
        self.long_span = long_span
        self.wander_window, self.wander_distinct = wander_window, wander_distinct
        self.count_copies, self.max_period = count_copies, max_period
        self.tokens: list[int] = []
        self.triggered = False
        self.loop_start: int | None = None
        """Index, among the generated tokens, where the loop began."""
        self.period: int | None = None
        """Length of the repeated block (for a wandering tail: of its first cycle)."""
        self.rule: str | None = None
        """Which rule tripped: short, block, wander or count."""
        self._last: dict[int, int] = {}  # token -> its last index
        self._last_pair: dict[int, int] = {}  # token pair -> index of its second token, last time
        self._runs: dict[int, _Run] = {}  # period -> live candidate
        self._window: deque[int] = deque()
        self._counts: dict[int, int] = {}  # token -> occurrences in the window
        self._half_window = max(1, wander_window // 2)
        self._periodic_at = -wander_window  # last index inside an exact stretch of half a window or more

    def push(self, token: int) -> bool:
        """Take the next generated token; True once a loop is detected (and from then on)."""
        if self.triggered:
            return True
        tokens, runs = self.tokens, self._runs
        index = len(tokens)
        tokens.append(token)
        if runs:
            self._advance(runs, token, index)
        # candidate periods: the distance back to this token's, and this pair's, previous occurrence
        previous = self._last.get(token)
        self._last[token] = index
        if previous is not None and index - previous not in runs:
            self._start_run(index - previous, index)
        if index:
            pair = tokens[index - 1] << _PAIR_SHIFT | token
            previous = self._last_pair.get(pair)
            self._last_pair[pair] = index
            if previous is not None and index - previous not in runs:
                self._start_run(index - previous, index)
        # the window of the wandering rule: how often each token occurs in the last wander_window tokens
        window, counts = self._window, self._counts
        window.append(token)
        counts[token] = counts.get(token, 0) + 1
        if len(window) > self.wander_window:
            old = window.popleft()
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        if runs or (len(counts) <= self.wander_distinct and min(counts.values()) > 1):
            found = self._check(index)
            if found is not None:
                self.triggered = True
                self.loop_start, self.period, self.rule = found
        return self.triggered

    def keep(self, tokens: Sequence[int]) -> list[int]:
        """`tokens` up to the loop's start plus one copy of its block; all of them when no loop was found."""
        if not self.triggered or self.loop_start is None or self.period is None:
            return list(tokens)
        return list(tokens[: self.loop_start + self.period])

    # -- per token --------------------------------------------------------------------------------------

    def _advance(self, runs: dict[int, _Run], token: int, index: int) -> None:
        tokens = self.tokens
        dead = []
        for period, run in runs.items():
            if tokens[index - period] == token:
                continue
            if period >= FUZZY_MIN_PERIOD and index - run.start > FUZZY_GAP:
                if index - run.burst_end == 1 and index - run.burst_start < FUZZY_BURST:
                    run.burst_end, run.burst_last = index, token  # the same changed number, one more digit
                    run.exact_from, run.rich = index + 1, None
                    continue
                if index - run.burst_end > FUZZY_GAP and (run.burst_last is None or run.close_burst()):
                    run.burst_start = run.burst_end = index
                    run.burst_last = token
                    run.exact_from, run.rich = index + 1, None
                    continue
            dead.append(period)
        for period in dead:
            del runs[period]

    def _start_run(self, period: int, index: int) -> None:
        runs = self._runs
        if period > self.max_period:
            return
        if len(runs) >= MAX_CANDIDATES:  # full (a long stretch matches at many periods): the shortest win
            longest = max(runs)
            if longest <= period:
                return
            del runs[longest]
        tokens, start = self.tokens, index
        while start - 1 - period >= 0 and tokens[start - 1] == tokens[start - 1 - period]:
            start -= 1  # the repetition may have begun before this token revealed the period
        runs[period] = _Run(period, start)

    def _check(self, index: int) -> tuple[int, int, str] | None:
        """(loop start, period, rule) when a rule is met at this token."""
        best: tuple[int, int, str] | None = None
        for period, run in self._runs.items():
            span = index - run.exact_from + 1 + period  # the exactly periodic stretch, first copy included
            if span >= self._half_window:
                self._periodic_at = index
            if period <= SHORT_PERIOD:
                met = span >= self.short_span
                rule = "short"
            else:
                copies = span // period
                rich_copies = self.rich_copies
                if period > LONG_PERIOD:  # a long rich block: a span's worth of copies, at least LONG_COPIES
                    rich_copies = min(rich_copies, max(LONG_COPIES, -(-self.long_span // period)))
                met = copies >= rich_copies and (copies >= self.loose_copies or self._rich(run, index))
                rule = "block"
            if met:
                found = (index + 1 - span, period, rule)
            elif run.counted >= -(-self.count_copies // max(1, len(run.history))):
                found = (run.start - period, period, "count")
            else:
                continue
            if best is None or found[1] < best[1]:
                best = found
        if best is not None:
            return best
        counts = self._counts
        if (len(counts) <= self.wander_distinct and len(self._window) >= self.wander_window
                and index - self._periodic_at >= self._half_window and min(counts.values()) > 1):
            return self._wander_start(index)
        return None

    def _rich(self, run: _Run, index: int) -> bool:
        if run.rich is None:
            run.rich = len(set(self.tokens[index + 1 - run.period: index + 1])) >= RICH_DISTINCT
        return run.rich

    def _wander_start(self, index: int) -> tuple[int, int, str]:
        """The poor stretch reaches back past the window as long as its tokens stay in the window's set."""
        tokens, alphabet = self.tokens, self._counts
        start = index + 1 - self.wander_window
        while start > 0 and tokens[start - 1] in alphabet:
            start -= 1
        first = tokens[start]
        period = next((j - start for j in range(start + 1, index + 1) if tokens[j] == first), 1)
        return start, period, "wander"


def find_loop(tokens: Sequence[int]) -> tuple[int, int] | None:
    """(start, period) of the first loop in `tokens` by the guard's rules, or None: the guard run offline."""
    guard = LoopGuard()
    for token in tokens:
        if guard.push(token):
            assert guard.loop_start is not None and guard.period is not None
            return guard.loop_start, guard.period
    return None
