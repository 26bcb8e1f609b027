"""The tree cache: partial search trees stored by a key that names everything that shapes
them, so a repeated search is served from its tree and a larger budget continues it.

Two stores share one interface (`TreeStore`):

- `MemoryTreeStore`: in-process LRU with an entry cap and a TTL (the embedded default).
- `RedisTreeStore`: shared by replicas, with a TTL, a size cap and a lock, so two replicas
  don't expand the same tree at once.

A cache never fails a request. Redis down or slow degrades every method (get -> None, put ->
nothing, lock -> runs unlocked), counts it in `deliberate_tree_cache_errors_total`, and logs one
line per outage; when Redis answers again the same store works again.

Trees are JSON documents: what goes in must be JSON-serializable (dicts with str keys, lists,
str, int, float incl. inf/nan, bool, None), and what comes out is a fresh copy (tuples come back
as lists). Both stores serialize, so a tree that works in memory works in Redis too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import Counter, Histogram

logger = logging.getLogger("deliberate.tree_store")

# Bump when the stored tree's layout changes: old trees then simply stop matching.
TREE_FORMAT_VERSION = 2  # 2: step searches grow a greedy first child
TREE_ID_PREFIX = "tree-"
TREE_ID_HEX = 24

DEFAULT_TTL_S = 3600
DEFAULT_MAX_ENTRIES = 256
DEFAULT_MAX_TREE_BYTES = 8 * 1024 * 1024  # of the tree's JSON, before compression
DEFAULT_LOCK_WAIT_S = 30.0  # then the search runs unlocked rather than failing
# Lease of a Redis lock, renewed every third of it while the holder lives: a lock left behind
# (its holder died, or Redis stalled through the release) costs the next search at most this.
DEFAULT_LOCK_TIMEOUT_S = 5.0
# An answer from Redis slower than this counts as Redis down. Not lower: on a loaded 2-core host
# the event loop alone can lag half a second, and a healthy Redis must not read as down then.
DEFAULT_SOCKET_TIMEOUT_S = 1.0
DEFAULT_MAX_CONNECTIONS = 64
POOL_WAIT_S = 2.0  # a call waits this long for a free pooled connection before degrading
DEFAULT_RETRY_AFTER_S = 1.0  # after a Redis failure, calls degrade at once for this long

COMPRESS_ABOVE_BYTES = 4096
RECENT_KEPT = 200  # trees listed per scope (the viewer's index)
FEED_KEPT = 10_000  # events per tree feed, about
FEED_READ_COUNT = 500
FEED_BLOCK_MS = 500
_RAW, _ZLIB = b"J", b"Z"  # one-byte header of a stored value

TREE_CACHE_HITS = Counter("deliberate_tree_cache_hits", "Tree cache lookups that found a tree.", ["store"])
TREE_CACHE_MISSES = Counter("deliberate_tree_cache_misses", "Tree cache lookups that found none.", ["store"])
TREE_CACHE_ERRORS = Counter(
    "deliberate_tree_cache_errors",
    "Tree cache operations that degraded (store unreachable or slow, or a value that would not "
    "encode or decode), by operation.",
    ["store", "op"],
)
TREE_CACHE_SKIPPED = Counter(
    "deliberate_tree_cache_skipped", "Trees not stored because they were over the size cap.", ["store"]
)
# A lock left behind must never cost more than its lease (DEFAULT_LOCK_TIMEOUT_S): the buckets
# around it show whether one did.
TREE_LOCK_WAIT = Histogram(
    "deliberate_tree_lock_wait_seconds",
    "How long a search waited for its tree's lock before holding it or going on unlocked, by store.",
    ["store"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# A wait over the lease is a stale lock's only where a lock was left behind: a live holder
# renews its lease, and a search may wait on it for as long as that search runs.
TREE_LOCKS_LEFT_BEHIND = Counter(
    "deliberate_tree_locks_left_behind",
    "Redis tree locks their holder did not release (the lease ran out first, or the release "
    "failed): each costs the next search for its tree at most the lease.", ["store"],
)


# --- key ---------------------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """Parameters in a form whose JSON is the same for equal meanings (1 and 1.0 alike)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def tree_key(secret: bytes, model_fingerprint: str, strategy: str, shaping_params: Mapping[str, Any],
             prompt_ids: list[int], scope: str = "") -> str:
    """The tree's key and public id, "tree-<24 hex>": an HMAC under the server's secret of a
    canonical JSON of everything that shapes the tree, and of the scope (the API key) that grows
    it. Without the secret nobody can compute an id from a guessed prompt; another scope gets
    another id. `shaping_params` are the strategy's parameters and the request's sampling (a dict
    or dataclass); None values (an unset option) are dropped."""
    params = {k: v for k, v in _canonical(shaping_params).items() if v is not None}
    material = {
        "v": TREE_FORMAT_VERSION,
        "model": model_fingerprint,
        "strategy": strategy,
        "params": params,
        "prompt": [int(t) for t in prompt_ids],
        "scope": scope,
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return TREE_ID_PREFIX + hmac.new(secret, blob.encode(), hashlib.sha256).hexdigest()[:TREE_ID_HEX]


def tree_scope(secret: bytes, api_key: str | None) -> str:
    """The scope of the trees a client grows: a keyed digest of its API key (never the key
    itself), or "" for a client with none."""
    if not api_key:
        return ""
    return "key-" + hmac.new(secret, b"scope:" + api_key.encode(), hashlib.sha256).hexdigest()[:16]


def is_tree_id(value: object) -> bool:
    """Whether `value` has the shape of a tree id (check a client's tree_id before using it)."""
    if not isinstance(value, str) or len(value) != len(TREE_ID_PREFIX) + TREE_ID_HEX:
        return False
    digits = value[len(TREE_ID_PREFIX):]
    return value.startswith(TREE_ID_PREFIX) and all(c in "0123456789abcdef" for c in digits)


# --- interface ---------------------------------------------------------------------------


@runtime_checkable
class TreeStore(Protocol):
    name: str

    async def get(self, tree_id: str) -> dict | None:
        """The stored tree (a fresh copy), or None: absent, expired, or the store unavailable."""

    async def put(self, tree_id: str, tree: dict) -> None:
        """Store (replace) the tree; silently not stored if over the size cap or unavailable."""

    def lock(self, tree_id: str) -> contextlib.AbstractAsyncContextManager[bool]:
        """`async with store.lock(tree_id) as held:` held while a search grows that tree. Waits at
        most the store's lock wait, then goes on unlocked; `held` says which happened."""

    async def shared_secret(self) -> bytes:
        """The key of tree ids, the same for every process that shares this store."""

    async def recent(self, scope: str, limit: int) -> list[tuple[str, dict]]:
        """Up to `limit` (tree id, entry) of the trees stored in `scope`, the latest stored first."""

    # The trees' event feeds (server.tree_feed), where other processes read them too.
    shares_feeds: bool

    async def add_events(self, batch: list[tuple[str, str, dict]]) -> None:
        """Append (tree id, scope, event) in order; a `start` event begins the tree's feed anew."""

    async def feed_scope(self, tree_id: str) -> str | None:
        """The scope of the tree's feed, None when there is none."""

    async def read_events(self, tree_id: str, after: str) -> list[tuple[str, dict]] | None:
        """(position, event) after position `after` ("0": from the start), waiting briefly for one;
        None when the store is unreachable."""

    @property
    def available(self) -> bool:
        """False while the store is known to be unreachable (its calls degrade)."""

    async def close(self) -> None: ...


def _encode_json(tree: dict) -> bytes:
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()


# --- memory ------------------------------------------------------------------------------


def _encode_or_count(store: str, tree_id: str, tree: dict) -> bytes | None:
    """The tree as JSON bytes, or None (counted and logged) when it cannot be serialized."""
    try:
        return _encode_json(tree)
    except (TypeError, ValueError) as exc:
        TREE_CACHE_ERRORS.labels(store, "encode").inc()
        logger.warning("tree cache: tree %s is not JSON-serializable, not stored: %s", tree_id, exc)
        return None


class MemoryTreeStore:
    """In-process LRU of serialized trees with an entry cap and a TTL (from the last put)."""

    name = "memory"

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, ttl_s: float = DEFAULT_TTL_S,
                 max_tree_bytes: int = DEFAULT_MAX_TREE_BYTES, lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
                 clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_tree_bytes = max_tree_bytes
        self.lock_wait_s = lock_wait_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id -> (expires_at, json)
        self._locks: dict[str, list] = {}  # id -> [asyncio.Lock, holders and waiters]
        self._secret = secrets.token_bytes(32)

    async def shared_secret(self) -> bytes:
        return self._secret  # nothing outside this process reads this store

    available = True
    shares_feeds = False  # nothing outside this process reads its feeds either: TreeFeeds keeps them

    async def add_events(self, batch: list[tuple[str, str, dict]]) -> None:
        return None

    async def feed_scope(self, tree_id: str) -> str | None:
        return None

    async def read_events(self, tree_id: str, after: str) -> list[tuple[str, dict]] | None:
        return None

    async def recent(self, scope: str, limit: int) -> list[tuple[str, dict]]:
        now = self._clock()
        found = []
        for tree_id in reversed(self._entries):  # the LRU's hot end first, then by store time
            expires_at, blob = self._entries[tree_id]
            entry = json.loads(blob) if expires_at > now else None
            if entry is not None and entry.get("scope", "") == scope:
                found.append((tree_id, entry))
        found.sort(key=lambda item: item[1].get("created", 0.0), reverse=True)
        return found[:limit]

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, tree_id: str) -> dict | None:
        entry = self._entries.get(tree_id)
        if entry is not None and entry[0] <= self._clock():
            del self._entries[tree_id]
            entry = None
        if entry is None:
            TREE_CACHE_MISSES.labels(self.name).inc()
            return None
        self._entries.move_to_end(tree_id)
        TREE_CACHE_HITS.labels(self.name).inc()
        return json.loads(entry[1])

    async def put(self, tree_id: str, tree: dict) -> None:
        blob = _encode_or_count(self.name, tree_id, tree)
        if blob is None:
            return
        if len(blob) > self.max_tree_bytes:
            TREE_CACHE_SKIPPED.labels(self.name).inc()
            self._entries.pop(tree_id, None)  # an older, smaller version would be stale now
            return
        self._entries[tree_id] = (self._clock() + self.ttl_s, blob)
        self._entries.move_to_end(tree_id)
        now = self._clock()
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        # Expired entries at the cold end go too, so memory follows the TTL without lookups.
        while self._entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest][0] > now:
                break
            del self._entries[oldest]

    @contextlib.asynccontextmanager
    async def lock(self, tree_id: str) -> AsyncIterator[bool]:
        slot = self._locks.setdefault(tree_id, [asyncio.Lock(), 0])
        slot[1] += 1
        held = False
        try:
            try:
                with TREE_LOCK_WAIT.labels("memory").time():
                    held = await asyncio.wait_for(slot[0].acquire(), self.lock_wait_s)
            except asyncio.TimeoutError:
                logger.info("tree cache: lock on %s still held after %.1f s; going on unlocked",
                            tree_id, self.lock_wait_s)
            try:
                yield held
            finally:
                if held:
                    slot[0].release()
        finally:
            slot[1] -= 1
            if slot[1] == 0 and self._locks.get(tree_id) is slot:
                del self._locks[tree_id]

    async def close(self) -> None:
        self._entries.clear()


# --- redis -------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without its password, for log lines."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<redis url>"


class RedisTreeStore:
    """Trees in Redis as compact JSON (zlib-compressed above COMPRESS_ABOVE_BYTES) under
    `key_prefix + tree_id` with `SET ... EX ttl_s`. One client (one connection pool) per store;
    make one store per process."""

    name = "redis"

    def __init__(self, url: str, ttl_s: int = DEFAULT_TTL_S, max_tree_bytes: int = DEFAULT_MAX_TREE_BYTES,
                 key_prefix: str = "deliberate:tree:", *, lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
                 retry_after_s: float = DEFAULT_RETRY_AFTER_S, max_connections: int = DEFAULT_MAX_CONNECTIONS):
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self.url = url
        self.ttl_s = max(1, int(ttl_s))
        self.max_tree_bytes = max_tree_bytes
        self.key_prefix = key_prefix
        self.lock_wait_s = lock_wait_s
        self.lock_timeout_s = lock_timeout_s
        self.retry_after_s = retry_after_s
        # A bad URL raises here, at startup; an unreachable server only degrades later calls.
        # One retry, on a fresh connection, for a refused or reset one only: a pooled
        # connection goes stale when Redis restarts, and that must not fail the next call (a
        # timeout, Redis frozen or slow, is not retried: it would double the wait).
        # A blocking pool: a burst of searches waits briefly for a connection instead of failing
        # with "Too many connections" and running uncached.
        pool = BlockingConnectionPool.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)), retry_on_error=[],
            max_connections=max_connections, timeout=POOL_WAIT_S, decode_responses=False)
        self.client = Redis.from_pool(pool)  # owns the pool: closing the client closes it
        self._down_since: float | None = None  # start of the current failure burst
        self._retry_at = 0.0  # monotonic time before which calls degrade without trying

    def key(self, tree_id: str) -> str:
        return self.key_prefix + tree_id

    @property
    def available(self) -> bool:
        return self._down_since is None

    async def shared_secret(self) -> bytes:
        """The secret in Redis, made by whichever process asked first (SET NX), so replicas agree.
        Redis unreachable: a secret of this process's own (its trees then match no other's)."""
        name = self.key_prefix + "secret"
        try:
            await self.client.set(name, secrets.token_bytes(32), nx=True)
            secret = await self.client.get(name)
        except Exception as exc:  # noqa: BLE001
            secret = None
            logger.warning("tree cache: could not read the shared tree secret from Redis at %s (%s); this "
                           "process uses its own, and shares no trees until restarted with --tree-secret or a "
                           "reachable Redis", redact_url(self.url), exc)
        return secret or secrets.token_bytes(32)

    # -- failure bookkeeping: one log line per burst, a counter per degraded call --

    def _skip(self, op: str) -> bool:
        """True (and counted) while Redis is known down and not yet due for another try."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            TREE_CACHE_ERRORS.labels(self.name, op).inc()
            return True
        return False

    def _failed(self, op: str, exc: BaseException) -> None:
        TREE_CACHE_ERRORS.labels(self.name, op).inc()
        now = time.monotonic()
        self._retry_at = now + self.retry_after_s
        if self._down_since is None:
            self._down_since = now
            logger.warning("tree cache: Redis at %s unavailable (%s: %s: %s); searches run uncached until it "
                           "answers again", redact_url(self.url), op, type(exc).__name__, exc)

    def _succeeded(self) -> None:
        if self._down_since is not None:
            logger.warning("tree cache: Redis at %s answers again after %.1f s", redact_url(self.url),
                           time.monotonic() - self._down_since)
            self._down_since = None

    # -- values --

    @staticmethod
    def _pack(blob: bytes) -> bytes:
        if len(blob) > COMPRESS_ABOVE_BYTES:
            return _ZLIB + zlib.compress(blob, 1)
        return _RAW + blob

    @staticmethod
    def _unpack(value: bytes) -> dict:
        head, body = value[:1], value[1:]
        if head == _ZLIB:
            body = zlib.decompress(body)
        elif head != _RAW:
            raise ValueError(f"unknown value header {head!r}")
        tree = json.loads(body)
        if not isinstance(tree, dict):
            raise ValueError(f"stored value is a {type(tree).__name__}, not a tree")
        return tree

    # -- interface --

    async def get(self, tree_id: str) -> dict | None:
        if self._skip("get"):
            return None
        try:
            value = await self.client.get(self.key(tree_id))
        except Exception as exc:  # noqa: BLE001 - redis errors, OSError, timeouts: all degrade
            self._failed("get", exc)
            return None
        self._succeeded()
        if value is None:
            TREE_CACHE_MISSES.labels(self.name).inc()
            return None
        try:
            tree = self._unpack(value)
        except (ValueError, zlib.error) as exc:
            TREE_CACHE_ERRORS.labels(self.name, "decode").inc()
            TREE_CACHE_MISSES.labels(self.name).inc()
            logger.warning("tree cache: stored tree %s does not decode, ignored: %s", tree_id, exc)
            return None
        TREE_CACHE_HITS.labels(self.name).inc()
        return tree

    async def put(self, tree_id: str, tree: dict) -> None:
        blob = _encode_or_count(self.name, tree_id, tree)
        if blob is None:
            return
        too_big = len(blob) > self.max_tree_bytes
        if too_big:
            TREE_CACHE_SKIPPED.labels(self.name).inc()
        if self._skip("put"):
            return
        try:
            if too_big:  # an older, smaller version would be stale now
                await self.client.delete(self.key(tree_id))
            else:
                recent = self.recent_key(tree.get("scope", ""))
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.set(self.key(tree_id), self._pack(blob), ex=self.ttl_s)
                    pipe.zadd(recent, {tree_id: time.time()})
                    pipe.zremrangebyrank(recent, 0, -RECENT_KEPT - 1)
                    pipe.expire(recent, self.ttl_s)
                    await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("put", exc)
            return
        self._succeeded()

    def recent_key(self, scope: str) -> str:
        return f"{self.key_prefix}recent:{scope}"

    async def recent(self, scope: str, limit: int) -> list[tuple[str, dict]]:
        if self._skip("recent"):
            return []
        try:
            ids = [tree_id.decode() for tree_id in await self.client.zrevrange(self.recent_key(scope), 0, limit - 1)]
            values = await self.client.mget([self.key(tree_id) for tree_id in ids]) if ids else []
        except Exception as exc:  # noqa: BLE001
            self._failed("recent", exc)
            return []
        self._succeeded()
        found = []
        for tree_id, value in zip(ids, values):
            with contextlib.suppress(ValueError, zlib.error):
                entry = self._unpack(value) if value is not None else None
                if entry is not None and entry.get("scope", "") == scope:
                    found.append((tree_id, entry))
        return found

    # -- feeds: a Redis stream per tree, `key + ":feed"`, kept as long as the tree --

    shares_feeds = True

    def feed_key(self, tree_id: str) -> str:
        return self.key(tree_id) + ":feed"

    async def add_events(self, batch: list[tuple[str, str, dict]]) -> None:
        if self._skip("feed"):
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for tree_id, scope, event in batch:
                    key = self.feed_key(tree_id)
                    fields = {"e": _encode_json(event)}
                    if event.get("type") == "start":
                        pipe.delete(key)
                        fields["s"] = scope
                    pipe.xadd(key, fields, maxlen=FEED_KEPT, approximate=True)
                    pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("feed", exc)
            return
        self._succeeded()

    async def feed_scope(self, tree_id: str) -> str | None:
        if self._skip("feed"):
            return None
        try:
            first = await self.client.xrange(self.feed_key(tree_id), count=1)
        except Exception as exc:  # noqa: BLE001
            self._failed("feed", exc)
            return None
        self._succeeded()
        if not first or b"s" not in first[0][1]:
            return None
        return first[0][1][b"s"].decode()

    async def read_events(self, tree_id: str, after: str) -> list[tuple[str, dict]] | None:
        if self._skip("feed"):
            return None
        try:
            # Blocking for less than the socket timeout, which would read as Redis down.
            replies = await self.client.xread({self.feed_key(tree_id): after}, count=FEED_READ_COUNT,
                                              block=FEED_BLOCK_MS)
        except Exception as exc:  # noqa: BLE001
            self._failed("feed", exc)
            return None
        self._succeeded()
        return [(position.decode(), json.loads(fields[b"e"])) for _, entries in replies or []
                for position, fields in entries]

    @contextlib.asynccontextmanager
    async def lock(self, tree_id: str) -> AsyncIterator[bool]:
        from redis.exceptions import LockNotOwnedError

        if self._skip("lock"):
            yield False
            return
        lock = self.client.lock(self.key(tree_id) + ":lock", timeout=self.lock_timeout_s, sleep=0.05,
                                blocking_timeout=self.lock_wait_s, thread_local=False)
        try:
            with TREE_LOCK_WAIT.labels("redis").time():
                held = await lock.acquire()
        except Exception as exc:  # noqa: BLE001
            self._failed("lock", exc)
            held = False
        else:
            self._succeeded()
            if not held:
                logger.info("tree cache: lock on %s still held after %.1f s; going on unlocked",
                            tree_id, self.lock_wait_s)
        renewer = asyncio.ensure_future(self._renew(lock, tree_id)) if held else None
        try:
            yield held
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(BaseException):
                    await renewer
            if held:
                try:
                    await lock.release()
                except LockNotOwnedError:
                    TREE_LOCKS_LEFT_BEHIND.labels("redis").inc()
                    logger.warning("tree cache: lock on %s had expired before release", tree_id)
                except Exception as exc:  # noqa: BLE001
                    TREE_LOCKS_LEFT_BEHIND.labels("redis").inc()
                    self._failed("unlock", exc)  # the lease frees it

    async def _renew(self, lock, tree_id: str) -> None:
        """Keeps the lease alive while the holder lives: a dead replica's lock expires on its own."""
        from redis.exceptions import LockNotOwnedError

        while True:
            await asyncio.sleep(self.lock_timeout_s / 3)
            try:
                await lock.reacquire()
            except LockNotOwnedError:
                logger.warning("tree cache: lost the lock on %s (lease expired)", tree_id)
                return
            except Exception as exc:  # noqa: BLE001 - try again next round; the lease bounds the damage
                self._failed("lock", exc)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


def build_tree_store(redis_url: str | None, ttl_s: int = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES,
                     max_connections: int = DEFAULT_MAX_CONNECTIONS, **options: Any) -> TreeStore:
    """Redis when a URL is given (shared by replicas; a pool of `max_connections`), else the
    in-process LRU. `options` go to the store's constructor (max_tree_bytes, lock_wait_s, ...)."""
    if redis_url:
        return RedisTreeStore(redis_url, ttl_s=ttl_s, max_connections=max_connections, **options)
    return MemoryTreeStore(max_entries=max_entries, ttl_s=ttl_s, **options)
