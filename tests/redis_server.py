"""A real `redis-server` for tests, on a free loopback port, with no persistence. It can be
stopped, paused (SIGSTOP: accepts connections, answers nothing) and started again on the same
port, to test what the tree cache does while Redis is down or slow.

Use the fixture: `from tests.redis_server import redis_server` in a test module (or conftest).
Without `redis-server` on PATH the fixture fails and says to run `make redis`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, executable: str, port: int | None = None):
        self.executable = executable
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="deliberate-redis-"))
        self.log_path = self.workdir / "redis.log"
        self.process: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start on self.port and wait (bounded) until it answers PING."""
        if self.running:
            return
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(self.log_path)]
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self.paused = False
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port} in {timeout} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after a bound); the port is free again afterwards."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if self.paused:
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None
        self.paused = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing is answered (a slow Redis)."""
        assert self.running, "redis-server is not running"
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.running and self.paused:
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def ensure_up(self) -> None:
        """Back to a running, answering server (after a test stopped or paused it)."""
        self.resume()
        if not (self.running and ping(self.port)):
            self.restart()

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"FLUSHALL\r\n")
            assert sock.recv(64).startswith(b"+OK")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis_server() -> RedisServer:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not on PATH: run `make redis` (installs Debian's redis-server) and retry.",
                    pytrace=False)
    last_error: Exception | None = None
    for _ in range(3):  # another process may take the free port between choosing and binding it
        server = RedisServer(executable)
        try:
            server.start()
            return server
        except RuntimeError as exc:
            last_error = exc
            server.close()
    pytest.fail(f"could not start redis-server: {last_error}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server():
    server = start_redis_server()
    try:
        yield server
    finally:
        server.close()
