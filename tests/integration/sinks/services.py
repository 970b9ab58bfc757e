"""Redis and NATS (JetStream) for the sink tests: the local servers when they answer, else our own.

:func:`find_or_start_redis` / :func:`find_or_start_nats` use the server on the standard local
port (127.0.0.1:6379 / :4222; for NATS only when JetStream is enabled) and otherwise start one
from the installed binary on a free port (``redis-server --save '' --appendonly no``,
``nats-server -js -sd <tmpdir>``), which :meth:`Service.stop` ends.  Tests that stop and
restart a server always start their own (:func:`start_redis`, :func:`start_nats`).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import nats
import redis

from cdc.localpg import free_port

HOST = "127.0.0.1"


@dataclass
class Service:
    kind: str  # "redis" or "nats"
    port: int
    argv: list[str] = field(default_factory=list)  # empty: a server we did not start
    proc: subprocess.Popen[bytes] | None = None
    workdir: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0" if self.kind == "redis" else f"nats://{HOST}:{self.port}"

    @property
    def owned(self) -> bool:
        return bool(self.argv)

    def start(self) -> None:
        assert self.owned and (self.proc is None or self.proc.poll() is not None)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = redis_answers if self.kind == "redis" else jetstream_answers
        deadline = time.monotonic() + 20
        while not ready(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def redis_answers(port: int) -> bool:
    if not _port_open(port):
        return False
    try:
        client = redis.Redis(host=HOST, port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def jetstream_answers(port: int) -> bool:
    if not _port_open(port):
        return False

    async def probe() -> bool:
        async def quiet(exc: Exception) -> None:
            pass

        nc = await nats.connect(
            f"nats://{HOST}:{port}",
            connect_timeout=1,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=quiet,
        )
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        finally:
            await nc.close()

    try:
        return asyncio.run(probe())
    except Exception:
        return False


def start_redis() -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise LookupError("redis-server is not installed")
    port = free_port()
    svc = Service(
        "redis",
        port,
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
    )
    svc.start()
    return svc


def start_nats() -> Service:
    binary = shutil.which("nats-server")
    if binary is None:
        raise LookupError("nats-server is not installed")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="cdc-nats-")
    svc = Service("nats", port, [binary, "-js", "-a", HOST, "-p", str(port), "-sd", workdir], workdir=workdir)
    svc.start()
    return svc


def find_or_start_redis() -> Service:
    return Service("redis", 6379) if redis_answers(6379) else start_redis()


def find_or_start_nats() -> Service:
    return Service("nats", 4222) if jetstream_answers(4222) else start_nats()
