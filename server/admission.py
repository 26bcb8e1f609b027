"""Admission control for searches, counted in engine sequences rather than HTTP requests.

A plain request keeps one sequence in the engine; a search keeps up to its width (`search.n`)
in flight at once, for many engine calls. So searches run while the sequences they hold fit the
engine's batch (`max_num_seqs`) and their number stays under `--max-concurrent-searches`; the
rest wait in a FIFO queue of at most `--max-queued-searches`, and past that the answer is a
429 with Retry-After, at once, instead of a latency that grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import Counter, Gauge
from vllm.exceptions import GracefulHTTPError

SEARCHES_RUNNING = Gauge("deliberate_searches_admitted", "Searches admitted and running.")
SEARCHES_QUEUED = Gauge("deliberate_search_queue_depth", "Searches waiting for admission.")
SEQUENCES_HELD = Gauge("deliberate_search_sequences_held", "Engine sequences the admitted searches may hold.")
SEARCHES_REJECTED = Counter("deliberate_searches_rejected", "Searches answered 429: the admission queue was full.")

# Running searches by default: as many of the default width (search.n = 8) as fill the engine's
# batch. Waiting ones: this many per running one, before 429s.
DEFAULT_SEARCH_WIDTH = 8
DEFAULT_QUEUE_FACTOR = 4


class SearchRejected(GracefulHTTPError):
    """A search not admitted, with a Retry-After saying when to try again."""

    def __init__(self, message: str, status: HTTPStatus, retry_after_s: int):
        super().__init__(message, status)
        self.retry_after_s = retry_after_s

    @classmethod
    def queue_full(cls, running: int, queued: int, retry_after_s: int) -> "SearchRejected":
        return cls(f"Too many searches: {running} running and {queued} waiting, the most this server queues. "
                   f"Retry after {retry_after_s} s, send a narrower search (smaller search.n), or send the "
                   "request without `search`.", HTTPStatus.TOO_MANY_REQUESTS, retry_after_s)

    @classmethod
    def shutting_down(cls, retry_after_s: int) -> "SearchRejected":
        # 503, as vLLM answers when its engine cannot take more: load balancers retry elsewhere.
        return cls("This server is shutting down and takes no new requests; retry, another replica will "
                   "answer.", HTTPStatus.SERVICE_UNAVAILABLE, retry_after_s)


@dataclass(frozen=True)
class AdmissionLimits:
    capacity: int  # engine sequences all running searches may hold together
    max_running: int
    max_queued: int

    @classmethod
    def for_engine(cls, max_num_seqs: int, max_running: int | None, max_queued: int | None) -> "AdmissionLimits":
        running = max_running if max_running is not None else max(1, max_num_seqs // DEFAULT_SEARCH_WIDTH)
        queued = max_queued if max_queued is not None else DEFAULT_QUEUE_FACTOR * running
        return cls(capacity=max(1, max_num_seqs), max_running=max(1, running), max_queued=max(0, queued))


class Admission:
    def __init__(self, limits: AdmissionLimits, retry_after_s: int = 1):
        self.limits = limits
        self.retry_after_s = retry_after_s
        self.running = 0
        self.held = 0
        self.waiting: deque[tuple[int, asyncio.Future]] = deque()
        self.closed = False
        self.idle = asyncio.Event()
        self.idle.set()

    def _fits(self, cost: int) -> bool:
        return self.running < self.limits.max_running and self.held + cost <= self.limits.capacity

    @contextlib.asynccontextmanager
    async def admit(self, width: int) -> AsyncIterator[None]:
        """Hold a place for a search that keeps up to `width` sequences in flight, waiting in
        the queue for one if need be; SearchRejected if the queue is full."""
        cost = min(max(1, width), self.limits.capacity)
        self.refuse_if_closed()
        if not self.waiting and self._fits(cost):
            self._take(cost)
        else:
            if len(self.waiting) >= self.limits.max_queued:
                SEARCHES_REJECTED.inc()
                raise SearchRejected.queue_full(self.running, len(self.waiting), self.retry_after_s)
            granted = asyncio.get_running_loop().create_future()
            entry = (cost, granted)
            self.waiting.append(entry)
            SEARCHES_QUEUED.set(len(self.waiting))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(cost)  # admitted just as the client left
                else:
                    self.waiting.remove(entry)
                    SEARCHES_QUEUED.set(len(self.waiting))
                raise
        try:
            yield
        finally:
            self._release(cost)

    def refuse_if_closed(self) -> None:
        if self.closed:
            raise SearchRejected.shutting_down(self.retry_after_s)

    def close(self) -> None:
        """Admit nothing more (the server is shutting down): waiting searches get a 503 now, and so
        does any new request on deliberate's routes, searched or plain."""
        self.closed = True
        while self.waiting:
            _, granted = self.waiting.popleft()
            granted.set_exception(SearchRejected.shutting_down(self.retry_after_s))
        SEARCHES_QUEUED.set(0)

    def _take(self, cost: int) -> None:
        self.idle.clear()
        self.running += 1
        self.held += cost
        SEARCHES_RUNNING.set(self.running)
        SEQUENCES_HELD.set(self.held)

    def _release(self, cost: int) -> None:
        self.running -= 1
        self.held -= cost
        # First come, first served: a wide search at the head is not overtaken by narrow ones.
        while self.waiting and self._fits(self.waiting[0][0]):
            cost_next, granted = self.waiting.popleft()
            self._take(cost_next)
            granted.set_result(None)
        SEARCHES_QUEUED.set(len(self.waiting))
        SEARCHES_RUNNING.set(self.running)
        SEQUENCES_HELD.set(self.held)
        if self.running == 0:
            self.idle.set()
