"""The tree cache on real parts: the in-process LRU, and a real redis-server (started by the
test on a free loopback port, stopped, paused and started again). No engine is started here."""

from __future__ import annotations

import asyncio
import json
import logging
import random

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from search.params import CommonParams
from server.tree_store import (
    MemoryTreeStore, RedisTreeStore, TreeStore, build_tree_store, is_tree_id, tree_key, tree_scope,
)
from tests.redis_server import redis_server  # noqa: F401 - the fixture

BOUND_S = 10.0  # every wait in this module is bounded by this
SECRET = b"test secret"


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def realistic_tree(seed: int = 0, width: int = 3, depth: int = 3, tokens: int = 24) -> dict:
    """A search tree like a strategy keeps: nested children, token ids, logprobs, scores."""
    rng = random.Random(seed)

    def node(level: int, path: str) -> dict:
        ids = [rng.randrange(49152) for _ in range(tokens)]
        return {
            "id": path,
            "token_ids": ids,
            "logprobs": [round(-rng.random() * 5, 6) for _ in ids],
            "score": rng.random(),
            "text": "".join(rng.choice("abc xyz\\n=+é") for _ in range(tokens)),
            "finish_reason": None if level < depth else "stop",
            "answer": "42" if level == depth else None,
            "visits": level,
            "children": [] if level == depth else [node(level + 1, f"{path}.{i}") for i in range(width)],
        }

    return {"format": 1, "strategy": "beam", "prompt_ids": list(range(50)), "spent_tokens": 1234,
            "best_score": float("-inf"), "root": node(0, "0")}


@pytest.fixture
def redis_url(redis_server):  # noqa: F811
    redis_server.ensure_up()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
async def raw(redis_url):
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_url):
    s = RedisTreeStore(redis_url, ttl_s=600, max_tree_bytes=1_000_000, lock_wait_s=2.0, lock_timeout_s=5.0,
                       retry_after_s=0.1)
    yield s
    await s.close()


# --- key ---------------------------------------------------------------------------------


def test_tree_key_names_everything_that_shapes_the_tree():
    base = tree_key(SECRET, "fp1", "beam", {"n": 4, "temperature": 0.7}, [1, 2, 3])
    assert is_tree_id(base) and base.startswith("tree-") and len(base) == 5 + 24
    assert tree_key(SECRET, "fp1", "beam", {"temperature": 0.7, "n": 4}, [1, 2, 3]) == base  # order
    assert tree_key(SECRET, "fp1", "beam", {"n": 4.0, "temperature": 0.7}, [1, 2, 3]) == base  # 4 == 4.0
    assert tree_key(SECRET, "fp1", "beam", {"n": 4, "temperature": 0.7, "seed": None}, [1, 2, 3]) == base  # unset
    assert tree_key(SECRET, "fp1", "beam", CommonParams(n=4, temperature=0.7), [1, 2, 3]) == \
        tree_key(SECRET, "fp1", "beam", {"n": 4, "temperature": 0.7, "top_p": 1.0, "answer_format": "auto",
                                 "include_greedy": True}, [1, 2, 3])
    others = {
        tree_key(SECRET, "fp2", "beam", {"n": 4, "temperature": 0.7}, [1, 2, 3]),
        tree_key(SECRET, "fp1", "best_of_n", {"n": 4, "temperature": 0.7}, [1, 2, 3]),
        tree_key(SECRET, "fp1", "beam", {"n": 5, "temperature": 0.7}, [1, 2, 3]),
        tree_key(SECRET, "fp1", "beam", {"n": 4, "temperature": 0.7}, [1, 2, 3, 4]),
        tree_key(SECRET, "fp1", "beam", {"n": 4, "temperature": 0.7}, [3, 2, 1]),
    }
    assert base not in others and len(others) == 5
    # Nobody without the secret computes the id; another API key's scope gets another id.
    assert tree_key(b"another secret", "fp1", "beam", {"n": 4, "temperature": 0.7}, [1, 2, 3]) != base
    scope_a, scope_b = tree_scope(SECRET, "key-a"), tree_scope(SECRET, "key-b")
    assert scope_a != scope_b and "key-a" not in scope_a and tree_scope(SECRET, None) == ""
    assert tree_key(SECRET, "fp1", "beam", {"n": 4, "temperature": 0.7}, [1, 2, 3], scope_a) != base
    assert not is_tree_id("tree-xyz") and not is_tree_id("deliberate:tree:*") and not is_tree_id(None)


def test_build_tree_store_picks_the_store():
    memory = build_tree_store(None, ttl_s=60, max_entries=8)
    assert isinstance(memory, MemoryTreeStore) and memory.max_entries == 8 and isinstance(memory, TreeStore)
    shared = build_tree_store("redis://127.0.0.1:1/0", ttl_s=60, max_entries=8)
    assert isinstance(shared, RedisTreeStore) and shared.ttl_s == 60 and isinstance(shared, TreeStore)


# --- memory ------------------------------------------------------------------------------


async def test_memory_store_evicts_least_recently_used():
    store = MemoryTreeStore(max_entries=2, ttl_s=600)
    await store.put("a", {"v": "a"})
    await store.put("b", {"v": "b"})
    assert await store.get("a") == {"v": "a"}  # a is now the most recently used
    await store.put("c", {"v": "c"})
    assert len(store) == 2
    assert await store.get("b") is None
    assert await store.get("a") == {"v": "a"} and await store.get("c") == {"v": "c"}


async def test_memory_store_expires_after_ttl():
    now = [1000.0]
    store = MemoryTreeStore(max_entries=10, ttl_s=60, clock=lambda: now[0])
    hits, misses = metric("deliberate_tree_cache_hits_total", store="memory"), \
        metric("deliberate_tree_cache_misses_total", store="memory")
    await store.put("t", {"x": 1})
    now[0] += 59
    assert await store.get("t") == {"x": 1}
    await store.put("u", {"x": 2})
    now[0] += 2  # t is 61 s old, u 2 s
    assert await store.get("t") is None
    assert await store.get("u") == {"x": 2}
    await store.put("w", {"x": 3})
    now[0] += 120
    await store.put("z", {"x": 4})  # a put drops the expired entries at the cold end
    assert len(store) == 1
    assert metric("deliberate_tree_cache_hits_total", store="memory") == hits + 2
    assert metric("deliberate_tree_cache_misses_total", store="memory") == misses + 1


async def test_memory_store_round_trips_copies_and_skips_big_trees():
    store = MemoryTreeStore(max_entries=10, ttl_s=600, max_tree_bytes=50_000)
    tree = realistic_tree(depth=2)
    await store.put("t", tree)
    got = await store.get("t")
    assert got == tree and got is not tree
    got["root"]["children"].clear()  # the caller's copy; the stored tree is untouched
    assert await store.get("t") == tree
    skipped = metric("deliberate_tree_cache_skipped_total", store="memory")
    await store.put("t", realistic_tree(depth=4))  # ~400 KB of JSON
    assert metric("deliberate_tree_cache_skipped_total", store="memory") == skipped + 1
    assert await store.get("t") is None  # the smaller, older version is gone too
    await store.put("bad", {"x": object()})  # not JSON: counted, never raised
    assert await store.get("bad") is None


async def test_memory_lock_excludes_and_is_bounded():
    store = MemoryTreeStore(lock_wait_s=0.2)
    order = []
    async with store.lock("t") as held:
        assert held
        # A second holder of the same tree gives up after the bound and goes on unlocked.
        async with store.lock("t") as second:
            assert second is False
        async with store.lock("other") as elsewhere:  # other trees are not blocked
            assert elsewhere

    store.lock_wait_s = BOUND_S
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def holder(name, gate=None):
        async with store.lock("t") as held:
            order.append((name, "in", held))
            if gate:
                first_in.set()
                await gate.wait()
            order.append((name, "out"))

    a = asyncio.create_task(holder("a", release_first))
    await asyncio.wait_for(first_in.wait(), BOUND_S)
    b = asyncio.create_task(holder("b"))
    await asyncio.sleep(0.05)
    assert ("b", "in", True) not in order
    release_first.set()
    await asyncio.wait_for(asyncio.gather(a, b), BOUND_S)
    assert order == [("a", "in", True), ("a", "out"), ("b", "in", True), ("b", "out")]
    assert not store._locks  # no per-key lock left behind


# --- redis -------------------------------------------------------------------------------


async def test_redis_round_trip_of_a_realistic_tree(store, raw):
    small = {"root": {"token_ids": [1, 2, 3], "score": 0.25, "children": []}}
    big = realistic_tree()
    tid_small = tree_key(SECRET, "fp", "beam", {"n": 2}, [1, 2, 3])
    tid_big = tree_key(SECRET, "fp", "beam", {"n": 3}, [1, 2, 3])
    hits = metric("deliberate_tree_cache_hits_total", store="redis")
    misses = metric("deliberate_tree_cache_misses_total", store="redis")

    assert await store.get(tid_big) is None
    await store.put(tid_small, small)
    await store.put(tid_big, big)
    assert await store.get(tid_small) == small
    got = await store.get(tid_big)
    assert got == big and got["best_score"] == float("-inf")
    assert got["root"]["children"][1]["children"][2]["logprobs"] == big["root"]["children"][1]["children"][2]["logprobs"]
    assert metric("deliberate_tree_cache_hits_total", store="redis") == hits + 2
    assert metric("deliberate_tree_cache_misses_total", store="redis") == misses + 1

    raw_small = await raw.get("deliberate:tree:" + tid_small)
    raw_big = await raw.get("deliberate:tree:" + tid_big)
    assert raw_small.startswith(b"J{")  # compact JSON
    plain = json.dumps(big, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw_big.startswith(b"Z") and len(raw_big) < len(plain)  # compressed above 4 KiB

    await store.put(tid_small, {"root": None})  # a put replaces
    assert await store.get(tid_small) == {"root": None}


async def test_redis_sets_the_ttl(store, raw):
    tid = tree_key(SECRET, "fp", "beam", {}, [7])
    await store.put(tid, {"x": 1})
    ttl = await raw.ttl("deliberate:tree:" + tid)
    assert 0 < ttl <= 600
    await raw.expire("deliberate:tree:" + tid, 1000)
    await store.put(tid, {"x": 2})  # every put sets it afresh
    assert 0 < await raw.ttl("deliberate:tree:" + tid) <= 600


async def test_redis_skips_trees_over_the_size_cap(redis_url, raw):
    store = RedisTreeStore(redis_url, ttl_s=600, max_tree_bytes=50_000)
    try:
        tid = tree_key(SECRET, "fp", "beam", {}, [8])
        await store.put(tid, realistic_tree(depth=1))
        assert await store.get(tid) is not None
        skipped = metric("deliberate_tree_cache_skipped_total", store="redis")
        await store.put(tid, realistic_tree(depth=4))
        assert metric("deliberate_tree_cache_skipped_total", store="redis") == skipped + 1
        assert await raw.exists("deliberate:tree:" + tid) == 0  # not stored, and the stale one is gone
        assert await store.get(tid) is None
    finally:
        await store.close()


async def test_replicas_sharing_redis_share_one_tree_secret(redis_url, raw):
    await raw.delete("deliberate:tree:secret")
    a, b = RedisTreeStore(redis_url), RedisTreeStore(redis_url)
    try:
        secret = await a.shared_secret()
        assert len(secret) == 32 and await b.shared_secret() == secret == await a.shared_secret()
    finally:
        await a.close()
        await b.close()
    unreachable = RedisTreeStore("redis://127.0.0.1:1/0")
    try:  # a secret of its own, not a failure
        assert len(await unreachable.shared_secret()) == 32
    finally:
        await unreachable.close()
    assert await MemoryTreeStore().shared_secret() != await MemoryTreeStore().shared_secret()


async def test_redis_ignores_a_value_it_cannot_decode(store, raw):
    tid = tree_key(SECRET, "fp", "beam", {}, [9])
    await raw.set("deliberate:tree:" + tid, b"Zthis is not zlib")
    errors = metric("deliberate_tree_cache_errors_total", store="redis", op="decode")
    assert await store.get(tid) is None
    assert metric("deliberate_tree_cache_errors_total", store="redis", op="decode") == errors + 1


async def test_redis_lock_excludes_a_second_replica(redis_url):
    # Two stores = two clients = two replicas.
    a = RedisTreeStore(redis_url, lock_wait_s=BOUND_S, lock_timeout_s=5.0)
    b = RedisTreeStore(redis_url, lock_wait_s=BOUND_S, lock_timeout_s=5.0)
    order = []
    a_in, release_a = asyncio.Event(), asyncio.Event()

    async def hold(store, name, gate=None):
        async with store.lock("tree-" + "a" * 24) as held:
            order.append((name, "in", held))
            if gate:
                a_in.set()
                await gate.wait()
            order.append((name, "out"))

    try:
        ta = asyncio.create_task(hold(a, "a", release_a))
        await asyncio.wait_for(a_in.wait(), BOUND_S)
        tb = asyncio.create_task(hold(b, "b"))
        await asyncio.sleep(0.3)  # b polls the lock meanwhile
        assert order == [("a", "in", True)]
        release_a.set()
        await asyncio.wait_for(asyncio.gather(ta, tb), BOUND_S)
        assert order == [("a", "in", True), ("a", "out"), ("b", "in", True), ("b", "out")]
    finally:
        release_a.set()
        await a.close()
        await b.close()


async def test_redis_lock_wait_is_bounded(redis_url):
    a = RedisTreeStore(redis_url, lock_wait_s=BOUND_S, lock_timeout_s=5.0)
    b = RedisTreeStore(redis_url, lock_wait_s=0.3, lock_timeout_s=5.0)
    try:
        async with a.lock("tree-" + "b" * 24) as held:
            assert held
            async def second():
                async with b.lock("tree-" + "b" * 24) as held_b:
                    return held_b
            assert await asyncio.wait_for(second(), BOUND_S) is False  # went on unlocked
        async with b.lock("tree-" + "b" * 24) as held_b:  # released: b gets it now
            assert held_b
    finally:
        await a.close()
        await b.close()


async def test_redis_lock_of_a_dead_holder_expires(store, raw):
    tid = "tree-" + "c" * 24
    # A replica that took the lock and died: its key, with its lease, and nobody to release it.
    await raw.set("deliberate:tree:" + tid + ":lock", b"dead-replica", nx=True, px=500)
    async def take():
        async with store.lock(tid) as held:
            return held
    waits = metric("deliberate_tree_lock_wait_seconds_count", store="redis")
    short = metric("deliberate_tree_lock_wait_seconds_bucket", store="redis", le="0.1")
    assert await asyncio.wait_for(take(), BOUND_S) is True  # lock_wait_s=2 > the 0.5 s lease
    # The wait is counted, and it lasted until the lease ran out (bench.soak reports how long).
    assert metric("deliberate_tree_lock_wait_seconds_count", store="redis") == waits + 1
    assert metric("deliberate_tree_lock_wait_seconds_bucket", store="redis", le="0.1") == short


async def test_a_redis_lock_that_expired_under_its_holder_is_counted_left_behind(store, raw):
    tid = "tree-" + "e" * 24
    left_behind = metric("deliberate_tree_locks_left_behind_total", store="redis")
    async with store.lock(tid) as held:
        assert held
        await raw.delete("deliberate:tree:" + tid + ":lock")  # its lease ran out during a stall
    assert metric("deliberate_tree_locks_left_behind_total", store="redis") == left_behind + 1
    async with store.lock(tid) as held:
        assert held
    assert metric("deliberate_tree_locks_left_behind_total", store="redis") == left_behind + 1


async def test_redis_lock_lease_is_renewed_while_held(redis_url, raw):
    a = RedisTreeStore(redis_url, lock_wait_s=1.0, lock_timeout_s=0.3)
    b = RedisTreeStore(redis_url, lock_wait_s=0.1, lock_timeout_s=0.3)
    tid = "tree-" + "d" * 24
    try:
        async with a.lock(tid) as held:
            assert held
            await asyncio.sleep(1.0)  # more than three leases
            assert await raw.exists("deliberate:tree:" + tid + ":lock") == 1
            async with b.lock(tid) as held_b:
                assert held_b is False
        assert await raw.exists("deliberate:tree:" + tid + ":lock") == 0  # released on exit
    finally:
        await a.close()
        await b.close()


def errors_total(*ops: str) -> float:
    return sum(metric("deliberate_tree_cache_errors_total", store="redis", op=op) for op in ops)


async def eventually_works(store: RedisTreeStore, tid: str, tree: dict) -> None:
    """Bounded: the same store object stores and reads again once Redis answers."""
    async def loop():
        while True:
            await store.put(tid, tree)
            if await store.get(tid) == tree:
                return
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), BOUND_S)


async def test_redis_down_degrades_and_recovers(redis_server, redis_url, store, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="deliberate.tree_store")
    tid = tree_key(SECRET, "fp", "beam", {}, [10])
    tree = realistic_tree(depth=1)
    await store.put(tid, tree)
    assert await store.get(tid) == tree

    redis_server.stop()
    try:
        before = errors_total("get", "put", "lock")

        async def while_down():
            for _ in range(3):
                assert await store.get(tid) is None
                await store.put(tid, tree)  # nothing raised, nothing stored
                async with store.lock(tid) as held:
                    assert held is False  # the search runs unlocked
                await asyncio.sleep(0.12)  # past retry_after_s: each round tries Redis again

        await asyncio.wait_for(while_down(), BOUND_S)
        assert errors_total("get", "put", "lock") >= before + 9
        for op in ("get", "put", "lock"):
            assert metric("deliberate_tree_cache_errors_total", store="redis", op=op) > 0
        down_lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(down_lines) == 1, [r.getMessage() for r in caplog.records]  # one line per outage
    finally:
        redis_server.start()  # same port: the store's URL is unchanged

    # The server came back empty (no persistence); the same store object works again.
    await eventually_works(store, tid, tree)
    async with store.lock(tid) as held:
        assert held is True
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_redis_slow_degrades_within_the_socket_timeout(redis_server, redis_url, store):  # noqa: F811
    tid = tree_key(SECRET, "fp", "beam", {}, [11])
    tree = {"root": {"token_ids": [1], "children": []}}
    await store.put(tid, tree)
    redis_server.pause()  # accepts connections, answers nothing
    try:
        before = errors_total("get", "put", "lock")

        async def while_slow():
            assert await store.get(tid) is None
            await asyncio.sleep(0.12)
            await store.put(tid, tree)
            await asyncio.sleep(0.12)
            async with store.lock(tid) as held:
                assert held is False

        await asyncio.wait_for(while_slow(), BOUND_S)  # each call gives up after its 0.5 s timeout
        assert errors_total("get", "put", "lock") >= before + 3
    finally:
        redis_server.resume()
    assert await asyncio.wait_for(_get_eventually(store, tid), BOUND_S) == tree  # the data survived the pause


async def _get_eventually(store, tid):
    while (tree := await store.get(tid)) is None:
        await asyncio.sleep(0.05)
    return tree


async def test_a_feed_published_in_one_process_is_followed_from_another_through_redis(redis_url):
    from server.tree_feed import TreeFeeds

    grower, reader = RedisTreeStore(redis_url), RedisTreeStore(redis_url)  # two processes' stores
    growing, reading = TreeFeeds(grower), TreeFeeds(reader)
    tree_id = "tree-" + "1" * 24
    try:
        growing.start(tree_id, "key-a", {"strategy": "mcts"})
        growing.publish(tree_id, {"type": "progress", "nodes": [{"address": ""}], "stats": []})
        await asyncio.wait_for(growing.flush(), BOUND_S)
        assert await reading.follow(tree_id, "key-b", idle_s=BOUND_S) is None  # another key's
        followed = await reading.follow(tree_id, "key-a", idle_s=BOUND_S)
        assert followed is not None
        first = [await asyncio.wait_for(anext(followed), BOUND_S) for _ in range(2)]
        growing.publish(tree_id, {"type": "done", "stored": True})  # live, after the reader caught up
        rest = [event async for event in followed]
        assert [event["type"] for event in first + rest] == ["start", "progress", "done"]
        assert first + rest == growing.logs[tree_id].events
        assert "scope" not in first[0] and "s" not in first[0]

        growing.start(tree_id, "key-a", {"strategy": "mcts"})  # a new run: the feed starts anew
        await asyncio.wait_for(growing.flush(), BOUND_S)
        again = await reading.follow(tree_id, "key-a", idle_s=0.5)
        assert [event["type"] async for event in again] == ["start"]  # then idle: the reader ends
    finally:
        await growing.close()
        await grower.close()
        await reader.close()


async def test_recent_trees_are_listed_per_scope_latest_first(redis_url):
    for store in (MemoryTreeStore(), RedisTreeStore(redis_url)):
        try:
            for i, scope in enumerate(["key-a", "key-b", "key-a"]):
                await store.put(f"tree-{i}", {"scope": scope, "created": 100.0 + i, "n": i})
                await asyncio.sleep(0.01)
            assert [tree_id for tree_id, _ in await store.recent("key-a", 10)] == ["tree-2", "tree-0"], store.name
            assert [entry["n"] for _, entry in await store.recent("key-b", 10)] == [1]
            assert len(await store.recent("key-a", 1)) == 1 and await store.recent("", 10) == []
        finally:
            await store.close()
