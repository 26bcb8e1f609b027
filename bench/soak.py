"""Load and faults against the real server: 64 clients, mixed plain and searched requests, for a
while per scenario, with Redis healthy, restarted, frozen and slowed mid-run, and a SIGTERM
under load at the end. Per scenario: requests answered, refused (429), failed (5xx or no
answer), connections refused (after SIGTERM), latency, searches that ran uncached, the slowest /health,
tree-lock waits, how many outlasted a lock's lease (a stale lock's bound) and the locks left
behind (without one, a wait over the lease is on a live holder), and the RSS of each of
the server's processes (API server, engine core, ...) after 100, 1,000, 2,000, 4,000 and 6,000
requests, so a growth can be placed and told from a leak (a leak keeps growing past the warm-up).

    python -m bench.soak                       # `make soak`; writes bench/results/soak.json
    python -m bench.soak --duration 20 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench.overhead import PROJECT_ROOT, ServerProcess, engine_counters, free_port, process_tree_rss
from server.tree_store import DEFAULT_LOCK_TIMEOUT_S
from tests.redis_server import start_redis_server

API_KEY = "soak-key"
QUESTIONS = [f"What is {a} + {b}? Answer with the number." for a, b in zip(range(3, 23), range(7, 27))]
RSS_MARKS = (100, 1000, 2000, 4000, 6000)
SCENARIOS = ("healthy", "redis restarted", "redis frozen 3 s", "redis slowed", "sigterm under load")


class Tally:
    def __init__(self):
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.health_max_s = 0.0

    def add(self, status: str, latency: float | None = None) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if latency is not None:
            self.latencies.append(latency)

    def row(self, scenario: str, uncached: float) -> dict:
        latencies = sorted(self.latencies) or [0.0]
        # A 503 (with Retry-After) sheds a request for the load balancer to retry elsewhere: not lost.
        failed = sum(n for status, n in self.statuses.items()
                     if (status.startswith("5") and status != "503") or status.startswith("no answer"))
        return {"scenario": scenario, "requests": sum(self.statuses.values()), "ok": self.statuses.get("200", 0),
                "429": self.statuses.get("429", 0), "503": self.statuses.get("503", 0), "failed": failed, "refused": self.statuses.get("refused", 0),
                "statuses": self.statuses,
                "p50_s": round(statistics.median(latencies), 2),
                "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
                "max_s": round(latencies[-1], 2), "uncached_searches": uncached,
                "health_max_s": round(self.health_max_s, 3)}


async def client_loop(base: str, tally: Tally, stop_at: float, rng: random.Random, sent: list[int]) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"},
                                 timeout=120) as http:
        while time.monotonic() < stop_at:
            body = {"model": "soak", "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}],
                    "max_tokens": 16}
            kind = rng.random()
            if kind < 0.3:
                body["search"] = {"strategy": "best_of_n", "n": 4}  # repeated prompts: tree cache hits
            elif kind < 0.5:
                body["search"] = {"strategy": "self_consistency", "n": 4, "cache": False}
            started = time.monotonic()
            try:
                response = await http.post("/v1/chat/completions", json=body)
            except httpx.ConnectError:  # not listening (any more): refused, not lost
                tally.add("refused")
                await asyncio.sleep(0.5)
                continue
            except httpx.HTTPError as exc:  # accepted, then no answer: a lost request
                tally.add(f"no answer ({type(exc).__name__})")
                await asyncio.sleep(0.5)
                continue
            sent[0] += 1
            tally.add(str(response.status_code), time.monotonic() - started)
            if response.status_code in (429, 503):
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def health_probe(base: str, tally: Tally, stop_at: float) -> None:
    """/health every half second, from a thread of its own: on the clients' event loop the
    probe would also time how late 64 busy clients let it run, not just the server."""
    def probe() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    http.get("/health")
                except httpx.HTTPError:
                    pass
                tally.health_max_s = max(tally.health_max_s, time.monotonic() - started)
                time.sleep(0.5)

    await asyncio.to_thread(probe)


async def fault(scenario: str, redis, server: ServerProcess, duration: float) -> None:
    third = duration / 3
    await asyncio.sleep(third)
    # Redis is stopped and started in a thread: waiting for it must not stall the clients' loop.
    if scenario == "redis restarted":
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(third)
        await asyncio.to_thread(redis.start)
    elif scenario == "redis frozen 3 s":
        redis.pause()
        await asyncio.sleep(3)
        redis.resume()
    elif scenario == "redis slowed":
        until = time.monotonic() + third
        while time.monotonic() < until:  # answers, but only in 0.2 s windows every 0.5 s
            redis.pause()
            await asyncio.sleep(0.3)
            redis.resume()
            await asyncio.sleep(0.2)
    elif scenario == "sigterm under load":
        # To the server's main process alone, as `docker stop` and Kubernetes send it.
        os.kill(server.process.pid, signal.SIGTERM)


def lock_waits(base: str) -> tuple[float, float, float]:
    """Tree-lock waits so far, those longer than a lock's lease (the bound on a stale lock), and
    the locks left behind (a wait over the lease is a stale lock's only if one was)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = within = left_behind = 0.0
    try:
        for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
            for sample in family.samples:
                if sample.name == "deliberate_tree_lock_wait_seconds_count":
                    total += sample.value
                elif sample.name == "deliberate_tree_lock_wait_seconds_bucket" \
                        and float(sample.labels["le"]) == DEFAULT_LOCK_TIMEOUT_S:
                    within += sample.value
                elif sample.name == "deliberate_tree_locks_left_behind_total":
                    left_behind += sample.value
    except httpx.HTTPError:
        return float("nan"), float("nan"), float("nan")
    return total, total - within, left_behind


def uncached_searches(base: str) -> float:
    try:
        return engine_counters(base, "deliberate_searches_uncached_total")["deliberate_searches_uncached_total"]
    except httpx.HTTPError:
        return float("nan")


async def run_scenario(scenario: str, args, base: str, redis, server: ServerProcess, sent: list[int],
                       rss: dict) -> dict:
    tally = Tally()
    errors_before = uncached_searches(base)
    waits_before = lock_waits(base)
    stop_at = time.monotonic() + args.duration
    rng = random.Random(args.seed)
    tasks = [asyncio.create_task(client_loop(base, tally, stop_at, random.Random(rng.random()), sent))
             for _ in range(args.clients)]
    tasks.append(asyncio.create_task(health_probe(base, tally, stop_at)))
    tasks.append(asyncio.create_task(fault(scenario, redis, server, args.duration)))

    async def watch_rss():
        while time.monotonic() < stop_at:
            for mark in RSS_MARKS:
                if sent[0] >= mark and mark not in rss:
                    rss[mark] = rss_by_process(server.process.pid)
            await asyncio.sleep(0.5)

    tasks.append(asyncio.create_task(watch_rss()))
    await asyncio.gather(*tasks)
    stopped = scenario == "sigterm under load"
    errors_after = uncached_searches(base) if not stopped else float("nan")
    waits_after = lock_waits(base) if not stopped else (float("nan"),) * 3
    row = tally.row(scenario, errors_after - errors_before)
    row["lock_waits"], row["lock_waits_over_lease"], row["locks_left_behind"] = (
        after - before for after, before in zip(waits_after, waits_before))
    print(json.dumps(row), flush=True)
    return row


async def soak(args) -> dict:
    redis = start_redis_server()
    port = free_port()
    log_path = Path(args.out).with_suffix(".server.log")
    command = [sys.executable, "-m", "server", "serve", "default", "--host", "127.0.0.1", "--port", str(port),
               "--served-model-name", "soak", "--max-model-len", "2048", "--enforce-eager", "--dtype", "bfloat16",
               "--redis-url", redis.url, "--api-key", API_KEY, "--max-concurrent-searches",
               str(args.max_concurrent_searches), "--max-queued-searches", str(args.max_queued_searches),
               "--shutdown-timeout", str(args.shutdown_timeout)]
    rows, rss, sent = [], {}, [0]
    try:
        with ServerProcess("deliberate", command, port, log_path) as server:
            server.wait_healthy(600)
            for scenario in args.scenarios:
                rows.append(await run_scenario(scenario, args, server.base_url, redis, server, sent, rss))
    finally:
        redis.close()
    return {"command": command, "clients": args.clients, "duration_s": args.duration, "rows": rows,
            "rss_mib_after": {str(mark): by_process for mark, by_process in rss.items()}}


def rss_by_process(pid: int) -> dict[str, float]:
    """MiB of RSS of the server's process tree, in all and per process name (vLLM names its
    processes: the API server's is the root, the engine core's `VLLM::EngineCore`)."""
    mib: dict[str, float] = {}
    for process, rss in process_tree_rss(pid):
        name = "API server" if process.pid == pid else process.name()
        mib[name] = mib.get(name, 0.0) + rss / 2**20
    return {"all": round(sum(mib.values()), 1), **{name: round(value, 1) for name, value in mib.items()}}


def table(result: dict) -> str:
    lines = ["| scenario | requests | ok | 429 | 503 | failed | refused | p50 (s) | p95 (s) | max (s) | "
             f"uncached searches | slowest /health (s) | lock waits (over the {DEFAULT_LOCK_TIMEOUT_S:g} s lease) | "
             "locks left behind |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['scenario']} | {row['requests']} | {row['ok']} | {row['429']} | {row['503']} | "
                     f"{row['failed']} | "
                     f"{row['refused']} | "
                     f"{row['p50_s']} | {row['p95_s']} | {row['max_s']} | {row['uncached_searches']:g} | "
                     f"{row['health_max_s']} | {row.get('lock_waits', float('nan')):g} "
                     f"({row.get('lock_waits_over_lease', float('nan')):g}) | "
                     f"{row.get('locks_left_behind', float('nan')):g} |")
    rss = result["rss_mib_after"]
    if rss:
        names = list(dict.fromkeys(name for by_process in rss.values() for name in by_process))
        first = next(iter(rss.values()))
        lines += ["", "| RSS (MiB) after N requests | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        for mark, by_process in rss.items():
            cells = [f"{by_process[name]:,.1f} ({by_process[name] / first[name]:.3f}x)"
                     if name in by_process and first.get(name) else "-" for name in names]
            lines.append(f"| {int(mark):,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per scenario")
    parser.add_argument("--max-concurrent-searches", type=int, default=4)
    parser.add_argument("--max-queued-searches", type=int, default=16)
    parser.add_argument("--shutdown-timeout", type=int, default=10, help="vLLM's drain on SIGTERM, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                        help="which to run, in this order (sigterm under load ends the server: last)")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(soak(args))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
