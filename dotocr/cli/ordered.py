"""Running a batch with several requests in flight while writing the results in input order.

A remote engine (vLLM on a GPU box, another dotocr-serve) batches concurrent requests, so `dotocr ocr` keeps
up to N of them in flight. Results are handed back strictly in input order, and never more than N are held
at once, so a thousand-page run stays bounded in memory. The workers are daemon threads: Ctrl-C ends the run
at once instead of waiting for requests already sent.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Future = concurrent.futures.Future
J = TypeVar("J")
R = TypeVar("R")

POLL_S = 0.2
"""How often the main thread wakes while it waits, so Ctrl-C is noticed on every platform."""


def in_order(jobs: Iterable[J], work: Callable[[J], R], concurrency: int) -> Iterator[tuple[J, Future[R]]]:
    """(job, finished future) for every job, in the order given, with up to `concurrency` running at once.

    With a concurrency of 1 the work runs on the calling thread, one job after the other.
    """
    if concurrency <= 1:
        for job in jobs:
            yield job, _run_now(work, job)
        return
    tasks: queue.Queue[tuple[J, Future[R]] | None] = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            item = tasks.get()
            if item is None:
                return
            job, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work(job))
                except BaseException as exc:  # handed to the main thread, which decides
                    future.set_exception(exc)

    threads = [threading.Thread(target=worker, name=f"dotocr-request-{n}", daemon=True)
               for n in range(concurrency)]
    for thread in threads:
        thread.start()
    pending: collections.deque[tuple[J, Future[R]]] = collections.deque()
    try:
        for job in jobs:
            future: Future[R] = Future()
            pending.append((job, future))
            tasks.put((job, future))
            while len(pending) >= concurrency:
                yield _wait(*pending.popleft())
        while pending:
            yield _wait(*pending.popleft())
    finally:
        stop.set()
        for _job, future in pending:
            future.cancel()
        for _thread in threads:
            tasks.put(None)


def _run_now(work: Callable[[J], R], job: J) -> Future[R]:
    future: Future[R] = Future()
    try:
        future.set_result(work(job))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        future.set_exception(exc)
    return future


def _wait(job: J, future: Future[R]) -> tuple[J, Future[R]]:
    while not future.done():
        concurrent.futures.wait([future], timeout=POLL_S)
    return job, future
