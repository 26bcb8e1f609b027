"""The real server, started once per test session: the embedded model on the real vLLM
engine, on a free loopback port, driven by the official `openai` client. It runs as an app in
production would: an API key, a tool parser, two API-server processes sharing Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.redis_server import start_redis_server

ROOT = Path(__file__).resolve().parent.parent
MODEL = "SmolLM2-135M-Instruct"
ALIAS = "smollm2-sc4"
API_KEY = "test-key"
OTHER_API_KEY = "another-tenant"  # a second key the server accepts: another tenant
AUTH = {"Authorization": f"Bearer {API_KEY}"}
STARTUP_TIMEOUT_S = 600
MAX_CONCURRENT_SEARCHES = 2
MAX_QUEUED_SEARCHES = 6
MAX_SEARCH_TOKENS = 32768
MAX_REQUEST_BYTES = 2_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server_redis():
    """The server's own real Redis (apart from the store tests' one, which they stop and start)."""
    redis = start_redis_server()
    try:
        yield redis
    finally:
        redis.close()


@pytest.fixture(scope="session")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="session")
def server(server_log, server_redis):
    port = free_port()
    log_path = server_log
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    command = [
        sys.executable, "-m", "server", "serve", "default", "--port", str(port),
        "--max-model-len", "2048", "--enforce-eager", "--dtype", "bfloat16",
        "--alias", f"{ALIAS}=self_consistency,n=4", "--redis-url", server_redis.url,
        # A second engine (the same small model) as the critic strategy's judge.
        "--critic-model", "default",
        # vLLM's own flags, passed through.
        "--api-key", API_KEY, OTHER_API_KEY, "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
        "--enable-request-id-headers",
        "--api-server-count", "2",
        # Admission per API process, small enough for a test to overflow; a cost cap; a body limit.
        "--max-concurrent-searches", str(MAX_CONCURRENT_SEARCHES), "--max-queued-searches", str(MAX_QUEUED_SEARCHES),
        "--max-search-tokens", str(MAX_SEARCH_TOKENS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become healthy in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=300) as c:
        yield c


@pytest.fixture(scope="session")
def http(server):
    """Raw HTTP to the server, with the API key."""
    with httpx.Client(base_url=server, headers=AUTH, timeout=300) as c:
        yield c


@pytest.fixture
async def async_client(server):
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=300) as c:
        yield c
