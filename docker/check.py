"""Runs the built images and shows they work (`make docker-cpu`, `make stack`).

    python docker/check.py image [--image deliberate:cpu]
        the CPU image on a Docker network with no way out (it starts offline): cold start to
        /health, a plain and a searched chat request with the openai client, image size.
    python docker/check.py stack
        the compose stack (two replicas, Redis, nginx, Prometheus): a search grown through
        replica A is a cache hit on replica B, Prometheus has both replicas' series, Redis
        stopped fails no request, replica A stopped mid-run fails none through nginx.

Each starts engines: run it under the engine lock. Every wait is bounded; what it shows goes to
stdout as one JSON object at the end (and to --out).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from openai import OpenAI

MODEL = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is 2 + 3? End with \"The answer is N.\""}]
SEARCH = {"strategy": "best_of_n", "n": 2, "scorer": "mean_logprob"}
TINY = {"max_tokens": 8, "seed": 7}
API_KEY = "unused"  # the servers check none; it still scopes the trees a client grows
ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"[check] {message}", file=sys.stderr, flush=True)


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if args[0] == "logs":  # a container's stderr is its log too
        return done.stdout + done.stderr
    if check and done.returncode:
        raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def container_ip(container: str) -> str:
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container).split()[0]


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, urllib.error.URLError):
        return None


def wait_healthy(urls: dict[str, str], containers: list[str], limit_s: float) -> dict[str, float]:
    """Seconds until each URL's /health answers 200; fails when a container exits or time runs out."""
    started, ready = time.monotonic(), {}
    while len(ready) < len(urls):
        if time.monotonic() - started > limit_s:
            raise TimeoutError(f"not healthy within {limit_s:.0f} s: {sorted(set(urls) - set(ready))}")
        for container in containers:
            if docker("inspect", "-f", "{{.State.Running}}", container) != "true":
                raise RuntimeError(f"{container} exited:\n{docker('logs', '--tail', '150', container, check=False)}")
        for name, url in urls.items():
            if name not in ready and status(f"{url}/health") == 200:
                ready[name] = round(time.monotonic() - started, 1)
                say(f"{name} healthy after {ready[name]} s")
        time.sleep(1)
    return ready


def client(url: str) -> OpenAI:
    # No client retries: a request that fails must show as failed.
    return OpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=300)


def chat(url: str, search: dict | None = None):
    extra = {"search": search} if search else None
    return client(url).chat.completions.create(model=MODEL, messages=QUESTION, extra_body=extra, **TINY)


def check_image(args) -> dict:
    network, name = "deliberate-offline", "deliberate-cpu-check"
    size = int(docker("image", "inspect", "-f", "{{.Size}}", args.image))
    docker("rm", "-f", name, check=False)
    if not docker("network", "ls", "-q", "-f", f"name=^{network}$"):
        docker("network", "create", "--internal", network)  # no route out: the image must start offline
    try:
        started = time.monotonic()
        docker("run", "-d", "--name", name, "--network", network, "--shm-size", "1g",
               "-e", f"VLLM_CPU_KVCACHE_SPACE={args.kv_cache_gib}", args.image)
        url = f"http://{container_ip(name)}:8000"
        wait_healthy({"image": url}, [name], args.health_limit_s)
        cold_start = round(time.monotonic() - started, 1)
        plain = chat(url)
        searched = chat(url, SEARCH)
        report = searched.model_extra["search"]
        assert plain.choices[0].message.content and plain.usage.completion_tokens > 0
        assert report["strategy"] == "best_of_n" and report["candidates"] == SEARCH["n"]
        assert searched.usage.completion_tokens >= plain.usage.completion_tokens
        offline = docker("exec", name, "python3", "-c", "import urllib.request as u\ntry: u.urlopen('https://pypi.org', "
                         "timeout=5); print('online')\nexcept OSError: print('offline')")
        return {"image": args.image, "image_size_gb": round(size / 1e9, 2), "cold_start_s": cold_start,
                "network": offline, "plain": {"text": plain.choices[0].message.content, "usage": plain.usage.model_dump()},
                "searched": {"text": searched.choices[0].message.content, "usage": searched.usage.model_dump(),
                             "search": {k: report[k] for k in ("strategy", "candidates", "tree_id", "cache_hit")}}}
    finally:
        docker("stop", "-t", "20", name, check=False, timeout=60)
        docker("rm", "-f", name, check=False)
        docker("network", "rm", network, check=False)


class Compose:
    """`docker compose` (the plugin) where the client has it, else the standalone docker-compose."""

    def __init__(self, project: str):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        self.command = ["docker", "compose"] if plugin else [shutil.which("docker-compose") or "docker-compose"]
        self.base = [*self.command, "-p", project, "-f", str(ROOT / "docker/compose.yaml"),
                     "-f", str(ROOT / "docker/compose.cpu.yaml")]
        say(f"compose: {' '.join(self.command)}")

    def __call__(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"compose {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done.stdout.strip()

    def container(self, service: str) -> str:
        return self("ps", "-q", service).splitlines()[0]


def prometheus_series(prometheus: str, prefix: str) -> set[str]:
    query = urllib.parse.quote(f'count by (instance) ({{__name__=~"{prefix}.+"}})')
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?query={query}", timeout=10) as response:
        return {row["metric"]["instance"] for row in json.load(response)["data"]["result"]}


def wait_for_series(prometheus: str, limit_s: float) -> dict[str, list[str]]:
    wanted, started = {"deliberate-a:8000", "deliberate-b:8000"}, time.monotonic()
    while True:
        found = {prefix: sorted(prometheus_series(prometheus, prefix)) for prefix in ("deliberate_", "vllm:")}
        if all(wanted <= set(instances) for instances in found.values()) or time.monotonic() - started > limit_s:
            return found
        time.sleep(2)


def cross_replica_cache(url_a: str, url_b: str) -> dict:
    grown = chat(url_a, SEARCH).model_extra["search"]
    tree_id = grown["tree_id"]
    # Trees are scoped to the API key that grew them: read it with the client's.
    read = urllib.request.Request(f"{url_b}/v1/search/trees/{tree_id}", headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(read, timeout=10) as response:
        stored = json.load(response)
    repeated = chat(url_b, SEARCH)
    resumed = chat(url_b, {**SEARCH, "tree_id": tree_id}).model_extra["search"]
    again = repeated.model_extra["search"]
    assert not grown["cache_hit"] and stored["id"] == tree_id
    assert again["cache_hit"] and again["tree_id"] == tree_id and repeated.usage.completion_tokens == 0
    assert again["grown_by"] == grown["served_by"] != again["served_by"] and resumed["cache_hit"]
    return {"tree_id": tree_id, "grown_by": grown["served_by"], "tree_read_on_b": stored["id"] == tree_id,
            "repeat_on_b": {k: again[k] for k in ("cache_hit", "served_by", "grown_by")},
            "repeat_completion_tokens": repeated.usage.completion_tokens, "tree_id_on_b_cache_hit": resumed["cache_hit"]}


def load(url: str, seconds: float, clients: int, fault=None, fault_after_s: float = 3.0) -> dict:
    """`clients` loops of plain and searched requests through `url` for `seconds`; `fault` runs once
    after `fault_after_s`. Counts what succeeded and what failed."""
    deadline, results = time.monotonic() + seconds, []

    def loop(index: int) -> list[str | None]:
        outcomes, turn = [], index
        while time.monotonic() < deadline:
            try:
                response = chat(url, {**SEARCH, "cache": False} if turn % 2 else None)
                outcomes.append(None if response.choices[0].message.content is not None else "empty answer")
            except Exception as error:  # every kind of failure is what this counts
                outcomes.append(f"{type(error).__name__}: {str(error)[:120]}")
            turn += 1
        return outcomes

    with concurrent.futures.ThreadPoolExecutor(clients + 1) as pool:
        futures = [pool.submit(loop, index) for index in range(clients)]
        if fault:
            time.sleep(fault_after_s)
            fault()
        for future in futures:
            results.extend(future.result(timeout=seconds + 400))
    failures = [outcome for outcome in results if outcome]
    return {"requests": len(results), "failed": len(failures), "failures": failures[:5]}


def check_stack(args) -> dict:
    compose = Compose(args.project)
    env = {"LB_PORT": str(args.lb_port), "PROMETHEUS_PORT": str(args.prometheus_port)}
    os.environ.update({key: os.environ.get(key, value) for key, value in env.items()})
    images = {key: os.environ.get(key, "(default)") for key in ("DELIBERATE_IMAGE", "REDIS_IMAGE", "NGINX_IMAGE",
                                                                 "PROMETHEUS_IMAGE")}
    say(f"images: {images}")
    compose("down", "--remove-orphans", timeout=120)
    try:
        started = time.monotonic()
        compose("up", "-d", "--no-build")
        a, b, redis = (compose.container(service) for service in ("deliberate-a", "deliberate-b", "redis"))
        url_a, url_b = (f"http://{container_ip(container)}:8000" for container in (a, b))
        lb, prometheus = f"http://127.0.0.1:{args.lb_port}", f"http://127.0.0.1:{args.prometheus_port}"
        ready = wait_healthy({"deliberate-a": url_a, "deliberate-b": url_b}, [a, b], args.health_limit_s)
        result = {"compose": " ".join(compose.command), "images": images, "healthy_after_s": ready,
                  "stack_up_s": round(time.monotonic() - started, 1)}
        assert chat(lb).choices[0].message.content is not None
        result["cross_replica_cache"] = cross_replica_cache(url_a, url_b)
        say(f"cross-replica cache: {result['cross_replica_cache']}")
        result["prometheus_series_by_instance"] = wait_for_series(prometheus, 60)
        say(f"prometheus: {result['prometheus_series_by_instance']}")
        docker("stop", redis)
        result["redis_stopped"] = load(lb, args.fault_seconds, clients=2)
        docker("start", redis)
        say(f"redis stopped: {result['redis_stopped']}")
        result["replica_a_stopped"] = load(lb, args.fault_seconds, clients=3,
                                           fault=lambda: docker("stop", "-t", "10", a, timeout=60))
        say(f"replica A stopped mid-run: {result['replica_a_stopped']}")
        series = result["prometheus_series_by_instance"]
        result["passed"] = (result["redis_stopped"]["failed"] == 0 == result["replica_a_stopped"]["failed"]
                            and all(len(instances) == 2 for instances in series.values()))
        return result
    finally:
        subprocess.run([*compose.base, "logs", "--tail", "30"], stdout=open(args.logs, "w"), stderr=subprocess.STDOUT,
                       timeout=60)
        compose("down", "--remove-orphans", timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    image = commands.add_parser("image")
    image.add_argument("--image", default="deliberate:cpu")
    image.add_argument("--kv-cache-gib", type=int, default=1)
    stack = commands.add_parser("stack")
    stack.add_argument("--project", default="deliberate-stack")
    stack.add_argument("--lb-port", type=int, default=18000)
    stack.add_argument("--prometheus-port", type=int, default=19090)
    stack.add_argument("--fault-seconds", type=float, default=20)
    stack.add_argument("--logs", default="/tmp/deliberate-stack.log", help="the services' last log lines go here")
    for command in (image, stack):
        command.add_argument("--health-limit-s", type=float, default=600)
        command.add_argument("--out", help="also write the JSON summary here")
    args = parser.parse_args()
    result = check_image(args) if args.command == "image" else check_stack(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if result.get("passed") is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
