"""Overhead vs raw vLLM: deliberate and vLLM's own OpenAI server, side by side in one run, on the
same model directory with the same engine flags.

Each round starts each server in turn (the order alternates between rounds to spread drift),
waits for /health, warms up, and measures: one request's latency, the wall time of a burst of
concurrent requests, one `n`-sample request, optionally a deliberate search against that n-sample
request, time to healthy, and the peak RSS of the server's process tree. Ratios are deliberate / vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
from openai import AsyncOpenAI

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEV_SET = Path(__file__).parent / "data" / "arith_dev.jsonl"
SERVERS = ("deliberate", "vllm")
DEFAULT_ENGINE_ARGS = "--max-model-len 2048 --enforce-eager --dtype bfloat16"
FIXED_PROMPT = "Tom has 3 apples and buys 4 more. How many apples does he have? Think step by step."
RSS_SAMPLE_INTERVAL_S = 0.2
STOP_GRACE_S = 30
MIB = 1024 * 1024


def process_tree_rss(pid: int) -> list[tuple[psutil.Process, int]]:
    """(process, RSS bytes) of a process and each of its descendants still running."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    sampled = []
    for process in processes:
        try:
            sampled.append((process, process.memory_info().rss))
        except psutil.NoSuchProcess:
            pass  # exited between listing and sampling
    return sampled


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants, keeping the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_bytes = 0
        self.latest_bytes = 0
        self._stopped = threading.Event()

    def tree_rss(self) -> int:
        return sum(rss for _, rss in process_tree_rss(self.pid))

    def run(self) -> None:
        while not self._stopped.wait(RSS_SAMPLE_INTERVAL_S):
            self.latest_bytes = self.tree_rss()
            self.peak_bytes = max(self.peak_bytes, self.latest_bytes)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


class ServerProcess:
    """A model server started in its own process group; stopped (group and descendants) on exit."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path):
        self.name, self.command, self.port, self.log_path = name, command, port, log_path
        self.process: subprocess.Popen | None = None
        self.sampler: TreeRssSampler | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerProcess":
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        # `python -m server` must resolve to this checkout when the project is not installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        self.sampler = TreeRssSampler(self.process.pid)
        self.sampler.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds from start until GET /health answers 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} while "
                                   f"starting; log tail:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not healthy after {timeout_s:.0f} s; log tail:\n"
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
        # Children that left the group or outlived the parent (an engine core mid-shutdown).
        _, alive = psutil.wait_procs(descendants, timeout=10)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if self.sampler:
            self.sampler.stop()
        self.process = None

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass


def engine_counters(base: str, *names: str) -> dict[str, float]:
    """The named vLLM counters from a server's /metrics, each summed over its label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(server: str, args: argparse.Namespace, port: int) -> list[str]:
    module = ["-m", "server", "serve"] if server == "deliberate" else [
        "-m", "vllm.entrypoints.openai.api_server"]
    return [sys.executable, *module, "--model", str(args.model), "--host", "127.0.0.1",
            "--port", str(port), "--served-model-name", args.served_model_name,
            *shlex.split(args.engine_args)]


def burst_questions(count: int) -> list[str]:
    """Distinct prompts for the concurrent burst (identical ones would share one prefix)."""
    with DEV_SET.open() as lines:
        questions = [json.loads(line)["question"] for line in lines if line.strip()]
    return [questions[i % len(questions)] for i in range(count)]


async def measure(server: str, base_url: str, args: argparse.Namespace) -> dict:
    """Timings against one running server; every list holds one entry per repetition."""
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="EMPTY",
                         timeout=args.request_timeout, max_retries=0)

    async def chat(content: str, **options) -> tuple[float, int]:
        started = time.perf_counter()
        response = await client.chat.completions.create(
            model=args.served_model_name, messages=[{"role": "user", "content": content}],
            max_tokens=args.max_tokens, **options)
        return time.perf_counter() - started, response.usage.completion_tokens

    async def burst() -> tuple[float, int]:
        started = time.perf_counter()
        results = await asyncio.gather(*(chat(question, temperature=0.0)
                                         for question in burst_questions(args.concurrent)))
        return time.perf_counter() - started, sum(tokens for _, tokens in results)

    results: dict[str, list] = {}

    def record(key: str, seconds: float, tokens: int) -> None:
        results.setdefault(f"{key}_s", []).append(seconds)
        results.setdefault(f"{key}_tokens", []).append(tokens)

    async with client:
        for _ in range(args.warmup):
            await chat(FIXED_PROMPT, temperature=0.0)
        await burst()
        for _ in range(args.repetitions):
            record("single", *await chat(FIXED_PROMPT, temperature=0.0))
        for _ in range(args.burst_repetitions):
            record("burst", *await burst())
        for repetition in range(args.burst_repetitions):
            record("n_samples", *await chat(FIXED_PROMPT, n=args.n, temperature=args.temperature,
                                            seed=repetition))
        if server == "deliberate" and args.deliberate_search:
            # Off the tree cache, or every repetition after the first would be a free lookup.
            search = {"cache": False, **args.deliberate_search}
            for _ in range(args.burst_repetitions):
                record("search", *await chat(FIXED_PROMPT, extra_body={"search": search}))
    return results


def run_rounds(args: argparse.Namespace) -> list[dict]:
    """Every (round, server) measurement, servers strictly one at a time."""
    measurements = []
    for round_index in range(args.rounds):
        order = args.servers if round_index % 2 == 0 else list(reversed(args.servers))
        for server in order:
            port = free_port()
            log_path = args.out.with_name(f"{args.out.stem}-{server}-round{round_index}.log")
            print(f"round {round_index + 1}/{args.rounds}: starting {server} on port {port} "
                  f"(log: {log_path})", file=sys.stderr)
            with ServerProcess(server, server_command(server, args, port), port, log_path) as process:
                startup_s = process.wait_healthy(args.startup_timeout)
                rss_after_load = process.sampler.tree_rss()
                results = asyncio.run(asyncio.wait_for(measure(server, process.base_url, args),
                                                       args.round_timeout))
                measurements.append({"server": server, "round": round_index,
                                     "startup_s": startup_s, "rss_after_load_bytes": rss_after_load,
                                     "peak_rss_bytes": process.sampler.peak_bytes, **results})
            print(f"round {round_index + 1}/{args.rounds}: {server} done", file=sys.stderr)
    return measurements


METRICS = [
    ("startup_s", "time to healthy (s)"),
    ("single_s", "1 request, median latency (s)"),
    ("burst_s", "concurrent burst, median wall (s)"),
    ("burst_tokens_per_s", "concurrent burst, tokens/s"),
    ("n_samples_s", "n-sample request, median (s)"),
    ("n_samples_tokens_per_s", "n-sample request, tokens/s"),
    ("peak_rss_mib", "peak RSS of process tree (MiB)"),
    ("rss_after_load_mib", "RSS when healthy (MiB)"),
]


def summarize(measurements: list[dict], server: str) -> dict:
    """Medians over all repetitions of all rounds of one server."""
    rows = [m for m in measurements if m["server"] == server]
    if not rows:
        return {}

    def pooled(key: str) -> list:
        return [value for row in rows for value in (row.get(key) or [])]

    def throughput(key: str) -> float:
        return statistics.median(tokens / seconds for row in rows
                                 for seconds, tokens in zip(row[f"{key}_s"], row[f"{key}_tokens"]))

    summary = {
        "startup_s": statistics.median(row["startup_s"] for row in rows),
        "single_s": statistics.median(pooled("single_s")),
        "single_tokens": statistics.median(pooled("single_tokens")),
        "burst_s": statistics.median(pooled("burst_s")),
        "burst_tokens_per_s": throughput("burst"),
        "n_samples_s": statistics.median(pooled("n_samples_s")),
        "n_samples_tokens_per_s": throughput("n_samples"),
        "peak_rss_mib": max(row["peak_rss_bytes"] for row in rows) / MIB,
        "rss_after_load_mib": statistics.median(row["rss_after_load_bytes"] for row in rows) / MIB,
    }
    if pooled("search_s"):
        summary["search_s"] = statistics.median(pooled("search_s"))
        summary["search_tokens_per_s"] = throughput("search")
    return summary


def ratios(deliberate: dict, vllm: dict) -> dict:
    """deliberate / vLLM per metric; search is set against vLLM's plain n-sample request."""
    result = {key: deliberate[key] / vllm[key] for key, _ in METRICS
              if key in deliberate and key in vllm and vllm[key]}
    if "search_s" in deliberate and vllm:
        result["search_s_vs_vllm_n_samples_s"] = deliberate["search_s"] / vllm["n_samples_s"]
    return result


def format_table(summaries: dict[str, dict], ratio_by_key: dict, args: argparse.Namespace) -> str:
    labels = [(key, label.replace("concurrent burst", f"{args.concurrent} concurrent")
               .replace("n-sample", f"n={args.n}")) for key, label in METRICS]
    if "search_s" in summaries.get("deliberate", {}):
        labels.append(("search_s", f"deliberate search vs vLLM n={args.n} (s)"))
    rows = [("metric", "deliberate", "vLLM", "deliberate / vLLM")]
    for key, label in labels:
        vllm_key = "n_samples_s" if key == "search_s" else key
        ratio_key = "search_s_vs_vllm_n_samples_s" if key == "search_s" else key
        cells = [summaries.get(server, {}).get(k) for server, k in
                 (("deliberate", key), ("vllm", vllm_key))]
        ratio = ratio_by_key.get(ratio_key)
        rows.append((label, *("-" if c is None else f"{c:.2f}" for c in cells),
                     "-" if ratio is None else f"{ratio:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", help="model directory; default: the embedded SmolLM2-135M")
    parser.add_argument("--served-model-name", default="bench-model")
    parser.add_argument("--engine-args", default=DEFAULT_ENGINE_ARGS,
                        help="vLLM engine flags given to both servers (one string)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="which servers to run, comma-separated")
    parser.add_argument("--rounds", type=int, default=2,
                        help="each round restarts every server; the order alternates")
    parser.add_argument("--warmup", type=int, default=2, help="single requests before measuring")
    parser.add_argument("--repetitions", type=int, default=5, help="single-request repetitions")
    parser.add_argument("--burst-repetitions", type=int, default=3,
                        help="repetitions of the burst, n-sample and search measurements")
    parser.add_argument("--concurrent", type=int, default=16, help="requests in the burst")
    parser.add_argument("--n", type=int, default=16, help="samples of the n-sample request")
    parser.add_argument("--temperature", type=float, default=0.7, help="of the n-sample request")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--deliberate-search", type=json.loads,
                        help='a search object to time on deliberate against vLLM\'s n-sample '
                             'request, e.g. \'{"strategy": "best_of_n", "n": 16}\'')
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--round-timeout", type=float, default=1800.0,
                        help="seconds for all measurements on one server")
    parser.add_argument("--out", type=Path, help="results JSON; default "
                        "bench/results/overhead-TIMESTAMP.json (server logs go beside it)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        raise SystemExit(f"--servers: unknown {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    if args.model is None:
        from server.default_model import prepare_default_model

        args.model = prepare_default_model()
    args.model = Path(args.model).resolve()
    args.out = (args.out or Path("bench/results") / time.strftime("overhead-%Y%m%d-%H%M%S.json")).resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    # Ctrl-C and SIGTERM unwind the stack, so the running server is stopped on the way out.
    # A handler of our own also keeps asyncio.run from merely cancelling the task on Ctrl-C,
    # which the HTTP client can absorb, leaving the benchmark running.
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        measurements = run_rounds(args)
    except (RuntimeError, TimeoutError) as error:
        raise SystemExit(f"overhead benchmark failed: {error}")
    except KeyboardInterrupt:
        print("interrupted; the server it had started is stopped", file=sys.stderr)
        raise SystemExit(130)

    summaries = {server: summarize(measurements, server) for server in args.servers}
    ratio_by_key = ratios(summaries["deliberate"], summaries["vllm"]) \
        if set(SERVERS) <= set(args.servers) else {}
    print(format_table(summaries, ratio_by_key, args))
    if ratio_by_key and summaries["deliberate"]["single_tokens"] != summaries["vllm"]["single_tokens"]:
        print("note: the greedy single request generated a different number of tokens on the two "
              "servers, so its latencies do not compare the same work")
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    args.out.write_text(json.dumps({"config": config, "summaries": summaries,
                                    "ratios_deliberate_over_vllm": ratio_by_key,
                                    "measurements": measurements}, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
