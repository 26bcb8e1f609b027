"""One event feed per search tree: what a search did, in order, for a streamed response's progress
chunks and for the tree viewer page alike.

A search publishes `start` (the run begins: readers drop what they drew of an earlier run), then
`progress` after every engine round (the round's counters, the nodes new since the last event and
the stats that moved: search.tree.Growth), then `done` once the tree is stored (or the search failed).

Every event goes to this process's listeners at once and into the tree's log here, so a page
opened mid-search replays the log and then follows. When the tree store is shared (Redis), the
events are also appended, in order, to a Redis stream per tree, which a page served by another
API process or replica replays and follows (XREAD), the way it reads the stored tree itself.
A Redis outage only costs the other processes' pages their live view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator

logger = logging.getLogger("deliberate.tree_feed")

MAX_LOGS = 64  # finished logs kept in this process, newest first out last
MAX_EVENTS = 10_000  # per log: a longer search keeps its last ones (the stored tree has it all)
DONE = "done"


class FeedLog:
    """One run's events on one tree, in this process."""

    def __init__(self, scope: str):
        self.scope = scope
        self.events: list[dict] = []
        self.finished = False


class TreeFeeds:
    """The feeds of the trees this process grows, with listeners, mirrored to a shared store."""

    def __init__(self, store, max_logs: int = MAX_LOGS):
        self.store = store
        self.max_logs = max_logs
        self.logs: OrderedDict[str, FeedLog] = OrderedDict()
        self.listeners: dict[str, set[asyncio.Queue]] = {}
        self.mirror: asyncio.Queue | None = None
        self.mirror_task: asyncio.Task | None = None
        self.unwritten = 0  # events published but not yet in the shared store

    # -- writing --

    def start(self, tree_id: str, scope: str, event: dict) -> None:
        """A run on `tree_id` begins: a fresh log, and `event` (type start) as its first entry."""
        self.logs[tree_id] = FeedLog(scope)
        self.logs.move_to_end(tree_id)
        while len(self.logs) > self.max_logs:
            oldest = next((key for key, log in self.logs.items() if log.finished), None)
            if oldest is None:
                break
            del self.logs[oldest]
        self.publish(tree_id, {**event, "type": "start"})

    def publish(self, tree_id: str, event: dict) -> None:
        event = {"at": round(time.time(), 3), **event}
        log = self.logs.get(tree_id)
        if log is not None and not log.finished:
            log.events.append(event)
            del log.events[:-MAX_EVENTS]
            log.finished = event.get("type") == DONE
            if self.store.shares_feeds:
                self._mirror(tree_id, log.scope, event)
        for queue in self.listeners.get(tree_id, ()):
            queue.put_nowait(event)

    def _mirror(self, tree_id: str, scope: str, event: dict) -> None:
        """Into the shared store, in publishing order: one writer drains one queue."""
        if self.mirror is None:
            self.mirror = asyncio.Queue()
        if self.mirror_task is None or self.mirror_task.done():
            self.mirror_task = asyncio.ensure_future(self._write_mirror())
        self.mirror.put_nowait((tree_id, scope, event))
        self.unwritten += 1

    async def _write_mirror(self) -> None:
        while True:
            batch = [await self.mirror.get()]
            while not self.mirror.empty():
                batch.append(self.mirror.get_nowait())
            try:
                await self.store.add_events(batch)  # degrades on its own when Redis is down
            finally:
                self.unwritten -= len(batch)

    async def flush(self) -> None:
        """Until the events published so far are in the shared store (the caller bounds the wait)."""
        while self.unwritten > 0 and self.mirror_task is not None and not self.mirror_task.done():
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self.mirror_task is not None:
            self.mirror_task.cancel()
            with contextlib.suppress(BaseException):
                await self.mirror_task

    # -- reading --

    @contextlib.contextmanager
    def listening(self, tree_id: str) -> Iterator[asyncio.Queue]:
        """A queue that receives every event published on `tree_id` from now on, in this process."""
        queue: asyncio.Queue = asyncio.Queue()
        self.listeners.setdefault(tree_id, set()).add(queue)
        try:
            yield queue
        finally:
            queue_set = self.listeners.get(tree_id, set())
            queue_set.discard(queue)
            if not queue_set:
                self.listeners.pop(tree_id, None)

    async def follow(self, tree_id: str, scope: str, idle_s: float) -> AsyncIterator[dict] | None:
        """The latest run's events on `tree_id` for a reader of `scope`: the log so far, then each
        new one until `done` (or until nothing came for `idle_s`); None when no feed of that
        tree is known here or in the shared store."""
        log = self.logs.get(tree_id)
        if log is not None:
            return self._follow_local(tree_id, log, idle_s) if log.scope == scope else None
        if self.store.shares_feeds and await self.store.feed_scope(tree_id) == scope:
            return self._follow_shared(tree_id, idle_s)
        return None

    async def _follow_local(self, tree_id: str, log: FeedLog, idle_s: float) -> AsyncIterator[dict]:
        with self.listening(tree_id) as queue:
            for event in list(log.events):  # copied before any await: nothing is missed or repeated
                yield event
                if event.get("type") == DONE:
                    return
            while not log.finished or not queue.empty():
                try:
                    event = await asyncio.wait_for(queue.get(), idle_s)
                except asyncio.TimeoutError:
                    return
                yield event
                if event.get("type") == DONE:
                    return

    async def _follow_shared(self, tree_id: str, idle_s: float) -> AsyncIterator[dict]:
        last, quiet_since = "0", time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            entries = await self.store.read_events(tree_id, last)
            if entries is None:
                return  # the store is unreachable: the page reads the stored tree instead
            for last, event in entries:
                quiet_since = time.monotonic()
                yield event
                if event.get("type") == DONE:
                    return
