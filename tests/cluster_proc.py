"""A real Redis Cluster for tests: N masters (and optional replicas) as redis-server processes in
cluster mode on free ports, joined by `redis-cli --cluster create`; every process stopped by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from redis_proc import RedisProc, free_port

CLUSTER_ARGS = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
]


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisClusterProc:
    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        n = masters * (1 + replicas)
        self.nodes = [RedisProc(directory / f"node{i}", cluster_port(), extra=CLUSTER_ARGS) for i in range(n)]
        self.replicas = replicas

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout: float = 60.0) -> RedisClusterProc:
        cli = shutil.which("redis-cli")
        if not cli:
            raise RuntimeError("redis-cli not found (Debian: redis-tools)")
        try:
            for n in self.nodes:
                n.start()
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            for p in self.ports:  # every node agrees the cluster is up
                while True:
                    with redis.Redis(port=p, decode_responses=True) as r:
                        info = r.cluster("info")
                    if info.get("cluster_state") == "ok":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster not ok on {p}: {info}")
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
