"""One generation at a time, a bounded line behind it, and a deadline for every request.

The model can only run one generation, and generation blocks, so it runs on one worker thread while the
event loop keeps answering (health, refusals, streams). A request first takes a ticket (refused at once
when the line is full), then waits its turn in order, then runs. The turn is handed on only when the
worker thread has really finished: a request that timed out or whose client left stops its generation
through the `should_stop` check the engine calls with every piece of text, and the next request starts
after that, never alongside it. A request whose deadline passed or whose client left while it waited never
starts. (The check runs after every generated token; the prefill before the first token cannot be
interrupted in transformers' `generate`, so a request with a huge prompt runs its prefill to the end.)
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class GateFull(Exception):
    """The line is full."""


class GateTimeout(Exception):
    """The deadline passed while waiting for the turn or for the result."""


class StopGeneration(Exception):
    """A request that is no longer wanted reached its turn: it does not start."""


class GenerationGate:
    def __init__(self, max_waiting: int) -> None:
        self.capacity = 1 + max_waiting
        self.admitted = 0
        self._running = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def full(self) -> bool:
        return self.admitted >= self.capacity

    def admit(self, timeout_s: float) -> Ticket:
        """A place in line, or GateFull. Call synchronously, once the request body is in."""
        if self.full:
            raise GateFull()
        self.admitted += 1
        return Ticket(self, time.monotonic() + timeout_s)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- the turn -----------------------------------------------------------------------------------

    async def _acquire(self, deadline: float) -> None:
        if not self._running and not self._waiters:
            self._running = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the turn arrived just as we gave up: pass it on
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise GateTimeout() from None

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # ownership passes straight to this waiter
                return
        self._running = False

    def _executor_for_run(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dotocr-generate")
        return self._executor


class Ticket:
    """One request's place in line. `close()` must be called once the handler is done with it."""

    def __init__(self, gate: GenerationGate, deadline: float) -> None:
        self.gate = gate
        self.deadline = deadline
        self.cancelled = threading.Event()
        self._timed_out = False
        self._running = False
        self._closed = False
        self._returned = False
        self._on_return: list[Callable[[], None]] = []

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def should_stop(self) -> bool:
        """True once the result is no longer wanted; the engine asks it after every token."""
        return self.cancelled.is_set() or self.expired

    @property
    def expired(self) -> bool:
        """Past the deadline, or one of its timers fired: asyncio runs a timer up to its clock's resolution
        early (15.6 ms on Windows, where `time.monotonic` ticks that coarsely), so the clock alone could still
        say "not yet" and a timed-out request would be answered as one whose client left."""
        return self._timed_out or time.monotonic() > self.deadline

    def time_out(self) -> None:
        """A timer set for the deadline fired: the result is no longer wanted."""
        self._timed_out = True
        self.cancelled.set()

    def check(self) -> None:
        if self.should_stop():
            raise StopGeneration()

    def on_return(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the place in line is given back (the handler is done and the work ended)."""
        if self._returned:
            callback()
        else:
            self._on_return.append(callback)

    async def start(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Wait for the turn (GateTimeout past the deadline), then run `work` on the worker thread.

        The turn and the place in line are given back when `work` returns, not when the caller stops
        waiting for it.
        """
        try:
            await self.gate._acquire(self.deadline)
        except GateTimeout:
            self._timed_out = True
            raise
        if self.should_stop():  # the deadline passed or the client left just as the turn came
            self.gate._release()
            raise GateTimeout()
        loop = asyncio.get_running_loop()

        def guarded() -> T:
            self.check()  # the turn came while the worker thread was still busy handing over
            return work()

        try:
            future: asyncio.Future[T] = loop.run_in_executor(self.gate._executor_for_run(), guarded)
        except BaseException:
            self.gate._release()
            raise
        self._running = True
        future.add_done_callback(self._work_done)
        return future

    async def run(self, work: Callable[[], T]) -> T:
        """`start` and wait for the result until the deadline (GateTimeout, and the work is told to stop)."""
        future = await self.start(work)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.remaining())
        except asyncio.TimeoutError:
            self.time_out()
            raise GateTimeout() from None
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def _work_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # mark it retrieved: a result nobody waits for is not an error to log
        self._running = False
        self.gate._release()
        self._give_back()

    def close(self) -> None:
        """The handler is done; the place in line is freed now, or when the work ends if it still runs."""
        self._closed = True
        if not self._running:
            self._give_back()

    def _give_back(self) -> None:
        if self._closed and not self._returned and not self._running:
            self._returned = True
            self.gate.admitted -= 1
            callbacks, self._on_return = self._on_return, []
            for callback in callbacks:
                callback()
