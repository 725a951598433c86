"""HTTP API submit latency beside the in-process client, on one private redis-server.

    python bench/api.py                       # 2,000 submits per cell, ~1 min
    python bench/api.py --requests 500        # quick smoke run

For 1 and 50 concurrent clients, each cell submits `--requests` jobs (`echo`, a small payload):
- "http": `POST /v1/queues/bench/jobs` to a `herder api` process (its own process, uvicorn, one
  event loop), from keep-alive httpx connections (one per concurrent client, TCP_NODELAY) in
  this process;
  latency = request sent -> 201 received, so it includes auth (token lookup in Redis),
  validation, the enqueue script and the HTTP round trip;
- "in-process": `HerderClient.enqueue` in this process (validation + one EVALSHA).
Both hit the same redis-server (persistence off: this measures the queue, not the disk).
Prints p50/p99 in milliseconds, submits per second, and the CPU time per submit of the process
doing the work (the API server, or this process for the in-process client, where it includes
the client side of asyncio and redis-py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import RedisServer, fmt, machine, percentile, progress, stop, table
from herder.api.tokens import Verb, new_token
from herder.client import HerderClient
from herder.keys import api_tokens_key
from herder.localredis import free_port
from herder.settings import HerderSettings


async def run_clients(concurrency: int, total: int, one: object) -> tuple[list[float], float]:
    """`concurrency` loops share `total` calls of `one()`; returns latencies (s) and wall time."""
    latencies: list[float] = []
    left = total

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await one()  # type: ignore[operator]
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


async def http_cell(url: str, token: str, concurrency: int, total: int) -> tuple[list[float], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    # TCP_NODELAY as curl and Node's fetch set it: without it httpx's separate header and body
    # writes meet the server's delayed ACK and each POST waits for it (tens of ms).
    transport = httpx.AsyncHTTPTransport(
        limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    )
    async with httpx.AsyncClient(base_url=url, transport=transport, headers=headers, timeout=30) as http:
        body = {"task": "echo", "payload": {"hello": "world"}}

        async def one() -> None:
            r = await http.post("/v1/queues/bench/jobs", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"submit failed: {r.status_code} {r.text}")

        await run_clients(concurrency, min(total, 100), one)  # warm-up: connections, imports
        return await run_clients(concurrency, total, one)


async def client_cell(settings: HerderSettings, concurrency: int, total: int) -> tuple[list[float], float]:
    async with HerderClient(settings) as client:

        async def one() -> None:
            await client.enqueue("bench", "echo", {"hello": "world"})

        await run_clients(concurrency, min(total, 100), one)
        return await run_clients(concurrency, total, one)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"herder api exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("herder api did not become ready")
        time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="submits per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    a = p.parse_args()
    rows = []
    with RedisServer() as server:
        settings = HerderSettings(redis_url=server.url)
        token, record = new_token(["bench"], [Verb.submit])
        server.sync().hset(api_tokens_key(settings.key_prefix), record.id, record.model_dump_json())
        port = free_port()
        env = {**os.environ, "HERDER_REDIS_URL": server.url}
        # The bench's rate must not throttle itself: a high per-token limit.
        cmd = [
            sys.executable,
            "-m",
            "herder.cli",
            "api",
            "--port",
            str(port),
            "--rate",
            "1000000",
            "--burst",
            "1000000",
        ]
        api = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, api)
            for c in a.concurrency:
                for mode in ("http", "in-process"):
                    progress(f"{mode}, {c} concurrent, {a.requests} submits")
                    # CPU per submit of the process doing the work (the API server; for the
                    # in-process client, this process): unlike latency, it barely depends on
                    # how loaded the machine is.
                    if mode == "http":
                        cpu0 = cpu_seconds(api.pid)
                        lat, wall = asyncio.run(http_cell(url, token, c, a.requests))
                        cpu = cpu_seconds(api.pid) - cpu0
                    else:
                        cpu0 = time.process_time()
                        lat, wall = asyncio.run(client_cell(settings, c, a.requests))
                        cpu = time.process_time() - cpu0
                    rows.append(
                        [
                            mode,
                            c,
                            len(lat),
                            fmt(percentile(lat, 50) * 1000),
                            fmt(percentile(lat, 99) * 1000),
                            fmt(len(lat) / wall, 0),
                            fmt(cpu / (len(lat) + min(a.requests, 100)) * 1000),  # + warm-up
                        ]
                    )
        finally:
            stop(api)
        version = server.version()
    load = os.getloadavg()[0]
    print(f"\nSubmit latency, redis-server {version}, {machine()}, load average {load:.1f}\n")
    print(table(["path", "clients", "submits", "p50 ms", "p99 ms", "submits/s", "CPU ms/submit"], rows))


if __name__ == "__main__":
    main()
