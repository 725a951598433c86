"""Shared helpers for the queue benchmarks: a private redis-server, worker subprocesses (Herder
and stock arq), client-side request counters, and table printing.

Run as a script it is the worker launcher used by the benchmarks:

    python bench/benchlib.py herder worker QUEUE --concurrency N [--name X] [--burst]
    python bench/benchlib.py arq --queue Q --max-jobs N [--burst] [--job-timeout S]

`herder ...` runs exactly the `herder` CLI (herder.cli.main) in this process; `arq ...` runs a
stock arq 0.28 `Worker` with default settings apart from those flags. With BENCH_COUNT_FILE set,
the process counts its Redis requests (see `install_counters`) and writes them as JSON to that
file on SIGUSR1 and at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import redis
from redis.crc import key_slot

from herder.localredis import LocalRedis, cluster_port

HERE = Path(__file__).resolve().parent


# ---- a private redis-server -------------------------------------------------------------


class RedisServer(LocalRedis):
    """herder's LocalRedis with persistence off (a benchmark measures the queue, not fsync)."""

    def __init__(self) -> None:
        # noeviction is Redis's default, and what BullMQ requires (it warns otherwise)
        super().__init__(appendonly=False, extra=["--maxmemory-policy", "noeviction"])

    def sync(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    @staticmethod
    def sync_for(url: str) -> redis.Redis:
        return redis.Redis.from_url(url, decode_responses=True)

    def version(self) -> str:
        return str(cast(dict[str, Any], self.sync().info("server"))["redis_version"])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterServer:
    """A Redis Cluster of `masters` private redis-servers (no replicas, persistence off): each
    node is given an equal share of the 16,384 slots with CLUSTER ADDSLOTSRANGE and joined with
    CLUSTER MEET (a one-master cluster, which `redis-cli --cluster create` refuses, works the
    same way). Every node is stopped by PID."""

    def __init__(self, masters: int) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-node-timeout", "2000", "--maxmemory-policy", "noeviction"]
        self.nodes = [LocalRedis(port=cluster_port(), appendonly=False, extra=args) for _ in range(masters)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def clients(self) -> list[Any]:
        return [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]

    def start(self, timeout: float = 30.0) -> RedisClusterServer:
        try:
            for n in self.nodes:
                n.start()
            per = 16384 // len(self.nodes)
            for i, r in enumerate(self.clients()):
                last = 16383 if i == len(self.nodes) - 1 else (i + 1) * per - 1
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
                if i:
                    r.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            deadline = time.monotonic() + timeout
            for r in self.clients():
                while r.cluster("info").get("cluster_state") != "ok" or len(r.cluster("nodes")) < len(
                    self.nodes
                ):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster not ok: {r.cluster('info')}")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> RedisClusterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def shard_of(key: str, masters: int) -> int:
    """Index of the RedisClusterServer node (of `masters`) that serves `key`'s slot."""
    return min(key_slot(key.encode()) // (16384 // masters), masters - 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (/proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, summed over its cores (/proc/stat)."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(r: redis.Redis) -> float:
    """used_cpu_sys + used_cpu_user of a redis-server (INFO cpu; main thread and children)."""
    info = cast(dict[str, Any], r.info("cpu"))
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_stats(r: redis.Redis) -> dict[str, int]:
    """calls per command since the last CONFIG RESETSTAT, without the bench's own CONFIG/INFO."""
    raw = cast(dict[str, Any], r.info("commandstats"))
    out = {}
    for key, val in raw.items():
        name = key.removeprefix("cmdstat_")
        if name.startswith(("config", "info")):
            continue
        out[name] = int(val["calls"])
    return out


# ---- client-side request counters -------------------------------------------------------


class Counters:
    """Requests this process sent to Redis, counted in redis-py's asyncio connection:
    `commands` = commands packed (one per command, pipelined or not; EVALSHA counts 1, the
    commands its script runs inside Redis are not seen here); `round_trips` = writes to the
    socket that the client then waits on (one per single command, one per whole pipeline or
    MULTI/EXEC block)."""

    commands = 0
    round_trips = 0

    @classmethod
    def snapshot(cls) -> dict[str, int]:
        return {"commands": cls.commands, "round_trips": cls.round_trips}


_installed = False


def install_counters() -> type[Counters]:
    global _installed
    if _installed:
        return Counters
    from redis.asyncio.connection import AbstractConnection

    pack = AbstractConnection.pack_command
    send = AbstractConnection.send_packed_command

    def pack_command(self: Any, *args: Any) -> Any:
        Counters.commands += 1
        return pack(self, *args)

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        Counters.round_trips += 1
        await send(self, command, check_health)

    AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]

    # Herder's pools pack with hiredis in a subclass (herder.connection._fast_connection), which
    # overrides pack_command: count there too (the subclasses are made when a pool is built).
    from herder import connection

    fast = connection._fast_connection

    def counted_fast(base: Any) -> Any:
        cls = fast(base)
        if cls.pack_command is AbstractConnection.pack_command:
            return cls  # no override: already counted above

        class Counted(cls):  # type: ignore[valid-type,misc]
            def pack_command(self: Any, *args: Any) -> Any:
                Counters.commands += 1
                return cls.pack_command(self, *args)

        Counted.__name__ = Counted.__qualname__ = cls.__name__
        return Counted

    connection._fast_connection = counted_fast  # type: ignore[assignment]

    # the client's enqueue fast lane writes without redis-py: count its commands and writes too
    from herder import fastlane

    def fast_send(n: int) -> None:
        Counters.commands += n
        Counters.round_trips += 1

    fastlane.on_send = fast_send
    _installed = True
    return Counters


def _count_to_file(path: str) -> None:
    install_counters()

    def dump(*_: Any) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(Counters.snapshot(), f)
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, dump)
    atexit.register(dump)


def read_counts(
    path: Path, proc: subprocess.Popen[bytes] | None = None, sig: int = signal.SIGUSR1
) -> dict[str, int]:
    """Ask a live worker (`sig`; BullMQ's Node worker uses SIGUSR2) for its counters, or read
    what it wrote at exit."""
    if proc is not None and proc.poll() is None:
        mtime = path.stat().st_mtime_ns if path.exists() else 0
        proc.send_signal(sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (not path.exists() or path.stat().st_mtime_ns == mtime):
            time.sleep(0.01)
    return dict(json.loads(path.read_text()))


# ---- worker subprocesses ----------------------------------------------------------------


def _spawn(
    args: list[str],
    url: str,
    count_file: Path | None,
    log: Path | None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HERDER_REDIS_URL=url, BENCH_REDIS_URL=url, **(extra_env or {}))
    env.pop("BENCH_COUNT_FILE", None)
    if count_file is not None:
        env["BENCH_COUNT_FILE"] = str(count_file)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, str(HERE / "benchlib.py"), *args], env=env, stdout=out, stderr=out
    )


def spawn_herder(
    url: str,
    queue: str,
    concurrency: int,
    *,
    name: str | None = None,
    burst: bool = False,
    count_file: Path | None = None,
    log: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`herder worker QUEUE --concurrency N` (the real CLI entry point) in a subprocess."""
    args = ["herder", "worker", queue, "--concurrency", str(concurrency)]
    if name:
        args += ["--name", name]
    if burst:
        args.append("--burst")
    return _spawn(args, url, count_file, log, extra_env)


def spawn_arq(
    url: str,
    queue: str,
    max_jobs: int,
    *,
    burst: bool = False,
    job_timeout: float | None = None,
    count_file: Path | None = None,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A stock arq 0.28 Worker (default settings but max_jobs/burst/job_timeout) in a subprocess."""
    args = ["arq", "--queue", queue, "--max-jobs", str(max_jobs)]
    if burst:
        args.append("--burst")
    if job_timeout is not None:
        args += ["--job-timeout", str(job_timeout)]
    return _spawn(args, url, count_file, log)


def stop(proc: subprocess.Popen[bytes], *, kill: bool = False, timeout: float = 10) -> None:
    """Stop a worker we started (by PID): SIGTERM (or SIGKILL), escalate if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    if not kill:
        proc.send_signal(signal.SIGTERM)  # Herder: the second signal hands jobs back and exits
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait(10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# ---- arq side: task functions and the worker --------------------------------------------


async def noop(ctx: dict[str, Any], i: int = 0) -> int:
    return i


async def sleep(ctx: dict[str, Any], seconds: float = 1.0) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def _run_arq(argv: Sequence[str]) -> None:
    import argparse

    from arq.connections import RedisSettings
    from arq.worker import Worker

    p = argparse.ArgumentParser()
    p.add_argument("--queue", required=True)
    p.add_argument("--max-jobs", type=int, default=10)
    p.add_argument("--burst", action="store_true")
    p.add_argument("--job-timeout", type=float, default=None)
    a = p.parse_args(argv)
    kwargs: dict[str, Any] = {}
    if a.job_timeout is not None:
        kwargs["job_timeout"] = a.job_timeout
    worker = Worker(
        functions=[noop, sleep],
        queue_name=a.queue,
        redis_settings=RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"]),
        max_jobs=a.max_jobs,
        burst=a.burst,
        **kwargs,
    )
    worker.run()


# ---- numbers and tables -----------------------------------------------------------------


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"  # NaN: not measurable in this run


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *[line(r) for r in cells[1:]]])


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _main(argv: list[str]) -> None:
    if os.environ.get("BENCH_COUNT_FILE"):
        _count_to_file(os.environ["BENCH_COUNT_FILE"])
    if argv and argv[0] == "herder":
        from herder.cli import main

        sys.argv = argv
        main()
    elif argv and argv[0] == "arq":
        _run_arq(argv[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    _main(sys.argv[1:])
