"""A real Redis Cluster for tests and benchmarks: N masters (and optional replicas) as redis-server
processes in cluster mode on free ports, joined by `redis-cli --cluster create`; every process
stopped by PID. `start()` returns once every node says `cluster_state:ok` and every replica is in
sync with its master, so a test may kill a master right away and expect a promotion."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis

from herder.localredis import cluster_port
from redis_proc import RedisProc

T = TypeVar("T")

# 2 s node timeout: a killed master is marked failed and its replica promoted within a few
# seconds (Redis' default, 15 s, would make every failover test slow).
NODE_TIMEOUT_MS = 2000
CLUSTER_ARGS = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    str(NODE_TIMEOUT_MS),
]


def poll(probe: Callable[[], T | None], what: str, timeout: float) -> T:
    """Call `probe` until it returns a value other than None (errors count as None)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except redis.RedisError as exc:
            value, last = None, exc
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached within {timeout}s (last error: {last})")
        time.sleep(0.05)


class RedisClusterProc:
    """`full_coverage`: Redis' cluster-require-full-coverage. With "yes" (Redis' default) every
    node refuses every query (CLUSTERDOWN) from the moment a master is marked failed until its
    replica is promoted; with "no" the other masters keep serving their slots meanwhile."""

    def __init__(
        self,
        directory: Path,
        masters: int = 3,
        replicas: int = 0,
        *,
        full_coverage: bool = True,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        n = masters * (1 + replicas)
        args = [*CLUSTER_ARGS, "--cluster-require-full-coverage", "yes" if full_coverage else "no"]
        args[args.index("--cluster-node-timeout") + 1] = str(node_timeout_ms)
        self.nodes = [RedisProc(directory / f"node{i}", cluster_port(), extra=args) for i in range(n)]
        self.masters_wanted = masters
        self.replicas = replicas

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """Any node's URL: a cluster client learns the rest from it."""
        return self.live()[0].url

    def live(self) -> list[RedisProc]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

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
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _info(self, node: RedisProc, section: str) -> dict[str, str]:
        with redis.Redis(port=node.port, decode_responses=True, socket_timeout=2) as r:
            raw = r.execute_command("INFO", section) if section != "cluster" else r.cluster("info")
        return {str(k): str(v) for k, v in raw.items()}

    def _healthy(self) -> bool | None:
        live = self.live()
        for n in live:
            if self._info(n, "cluster").get("cluster_state") != "ok":
                return None
        masters = self.masters()
        if len(masters) != self.masters_wanted:
            return None
        for n in live:
            info = self._info(n, "replication")
            if info.get("role") == "slave" and (
                info.get("master_link_status") != "up" or info.get("master_sync_in_progress") != "0"
            ):
                return None
        return True

    def healthy(self) -> bool:
        """`wait_healthy`'s condition, now (False while nodes disagree or cannot answer)."""
        try:
            return bool(self._healthy())
        except redis.RedisError:
            return False

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Every live node says the cluster is ok, there are `masters` masters, and every live
        replica's link to its master is up and synced."""
        poll(self._healthy, "a healthy cluster", timeout)

    def _nodes_view(self) -> list[dict[str, str]]:
        """CLUSTER NODES as the first live node sees it: id, address, flags and slots per node."""
        with redis.Redis(port=self.live()[0].port, decode_responses=True, socket_timeout=2) as r:
            text = r.execute_command("CLUSTER NODES")
        if isinstance(text, dict):  # redis-py may parse the reply already
            return [{"addr": a, "flags": v["flags"], "slots": " ".join("-".join(s) for s in v["slots"])}
                    for a, v in text.items()]  # fmt: skip
        rows = []
        for line in str(text).splitlines():
            parts = line.split()
            rows.append({"addr": parts[1].split("@")[0], "flags": parts[2], "slots": " ".join(parts[8:])})
        return rows

    def _by_port(self, port: int) -> RedisProc:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[RedisProc]:
        """The live nodes that are masters serving slots now."""
        out = []
        for row in self._nodes_view():
            if "master" in row["flags"] and "fail" not in row["flags"] and row["slots"]:
                node = self._by_port(int(row["addr"].rsplit(":", 1)[1]))
                if node in self.live():
                    out.append(node)
        return out

    def node_for_key(self, key: str) -> RedisProc:
        """The master serving `key`'s slot now."""
        with redis.Redis(port=self.live()[0].port, decode_responses=True, socket_timeout=2) as r:
            slot = int(r.execute_command("CLUSTER KEYSLOT", key))
            for start, end, master, *_ in r.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return self._by_port(int(master[1]))
        raise RuntimeError(f"no node serves slot {slot}")

    def kill(self, node: RedisProc) -> int:
        """SIGKILL one node by PID (a crash: no shutdown, no last write to its replica)."""
        assert node.proc is not None
        pid = node.proc.pid
        node.kill(signal.SIGKILL)
        return pid

    def flushall(self) -> None:
        """Empty every master (replicas follow); between tests of a shared cluster."""
        for n in self.masters():
            with redis.Redis(port=n.port, socket_timeout=5) as r:
                r.flushall()
                r.script_flush()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
