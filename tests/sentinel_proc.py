"""A real Sentinel deployment for tests and benchmarks: one master, N replicas (`--replicaof`) and
three redis-sentinel processes (quorum 2) on free ports, all with AOF on as in production.
`start()` returns once every sentinel sees the master, every replica and the other sentinels;
`stop()` ends every process by PID."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from procs import stop_process
from redis_proc import RedisProc, free_port

MASTER_NAME = "herdermaster"
# Small but not tiny: a loaded machine must not see a busy master as down (false failovers).
DOWN_AFTER_MS = 1000
# Also the wait before a failed failover is retried (2x); a promotion itself takes well under it.
FAILOVER_TIMEOUT_MS = 3000


class SentinelProc:
    def __init__(self, directory: Path, master_port: int, quorum: int) -> None:
        self.dir = directory
        self.port = free_port()
        self.master_port = master_port
        self.quorum = quorum
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProc:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "sentinel.conf"  # sentinel rewrites it (state, known peers): its own file
        conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            "daemonize no\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            # every process is on 127.0.0.1: announce that, never a host name
            "sentinel announce-ip 127.0.0.1\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        binary = shutil.which("redis-sentinel")
        cmd = [binary, str(conf)] if binary else ["redis-server", str(conf), "--sentinel"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)


class SentinelGroup:
    """`nodes[0]` is the first master; after a failover `master_port()` names the promoted one."""

    def __init__(
        self,
        directory: Path,
        replicas: int = 2,
        sentinels: int = 3,
        quorum: int = 2,
        extra: list[str] | None = None,
    ) -> None:
        """`extra`: more redis-server arguments for every node (e.g. min-replicas-to-write)."""
        self.dir = directory
        # Diskless sync with no delay: a (re)joining replica syncs at once (7.0 waits 5 s).
        sync = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", *(extra or [])]
        self.nodes = [RedisProc(directory / "node0", appendonly=True, extra=sync)]
        master_port = self.nodes[0].port
        for i in range(1, replicas + 1):
            extra = [*sync, "--replicaof", "127.0.0.1", str(master_port)]
            self.nodes.append(RedisProc(directory / f"node{i}", appendonly=True, extra=extra))
        self.sentinels = [
            SentinelProc(directory / f"sentinel{i}", master_port, quorum) for i in range(sentinels)
        ]

    @property
    def env_value(self) -> str:
        """HERDER_REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def node(self, port: int) -> RedisProc:
        return next(n for n in self.nodes if n.port == port)

    def start(self, timeout: float = 60.0) -> SentinelGroup:
        try:
            for n in self.nodes:
                n.start()
            # Replicas online before the sentinels start: a sentinel's first INFO of the master
            # then lists them all (later ones would wait for its 10 s INFO period).
            self._wait(lambda: self._replicas_online(self.nodes[0].port) == len(self.nodes) - 1, timeout)
            for s in self.sentinels:
                s.start()
            self.wait_settled(self.nodes[0].port, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for n in self.nodes:
            n.stop()

    # ---- observations ---------------------------------------------------------------------

    def _replicas_online(self, port: int) -> int:
        try:
            info = redis.Redis(port=port, socket_timeout=2, decode_responses=True).info("replication")
        except redis.RedisError:
            return -1
        return sum(
            1
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    def master_port(self) -> int | None:
        """The master the sentinels agree on (a majority), or None while they do not."""
        votes: dict[int, int] = {}
        for s in self.sentinels:
            try:
                addr = s.client().sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if addr:
                votes[int(addr[1])] = votes.get(int(addr[1]), 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] * 2 > len(self.sentinels) else None

    def settled(self, port: int) -> bool:
        """Every sentinel names `port` as a healthy master, sees every other live node as a
        healthy replica of it, and sees the other sentinels."""
        live = [n for n in self.nodes if n.proc and n.proc.poll() is None and n.port != port]
        for s in self.sentinels:
            try:
                c = s.client()
                m = c.sentinel_master(MASTER_NAME)
                replicas = c.sentinel_slaves(MASTER_NAME)
            except redis.RedisError:
                return False
            if int(m["port"]) != port or not m["is_master"] or m["is_sdown"] or m["is_odown"]:
                return False
            if m["num-other-sentinels"] != len(self.sentinels) - 1:
                return False
            healthy = {
                int(r["port"])
                for r in replicas
                if not r["is_sdown"] and r.get("master-link-status") == "ok" and r.get("master-port") == port
            }
            if not {n.port for n in live} <= healthy:
                return False
        return self._replicas_online(port) >= len(live)

    def wait_settled(self, port: int, timeout: float = 60.0) -> None:
        self._wait(lambda: self.settled(port), timeout)

    def wait_settled_elsewhere(self, old_port: int, timeout: float = 180.0) -> int:
        """Wait until the sentinels agree on a master other than `old_port` and are settled on it;
        returns its port. On a loaded machine the sentinels may fail over once more (a starved
        master looks down), so this follows whichever master they settle on."""

        def ok() -> bool:
            port = self.master_port()
            return port is not None and port != old_port and self.settled(port)

        self._wait(ok, timeout)
        port = self.master_port()
        assert port is not None
        return port

    def describe(self) -> str:
        """Each sentinel's master and each node's role: for a failure message."""
        views = []
        for s in self.sentinels:
            try:
                views.append(str(s.client().sentinel_get_master_addr_by_name(MASTER_NAME)))
            except redis.RedisError as exc:
                views.append(f"error {exc}")
        roles = []
        for n in self.nodes:
            try:
                info = redis.Redis(port=n.port, socket_timeout=2, decode_responses=True).info("replication")
                roles.append(f"{n.port}:{info.get('role')}->{info.get('master_port', '')}")
            except redis.RedisError as exc:
                roles.append(f"{n.port}:{type(exc).__name__}")
        return f"sentinels see {views}; nodes {roles}"

    def wait_failover(self, old_port: int, timeout: float = 60.0) -> int:
        """Wait until the sentinels agree on a master other than `old_port`; returns its port."""
        self._wait(lambda: self.master_port() not in (None, old_port), timeout)
        port = self.master_port()
        assert port is not None
        return port

    @staticmethod
    def _wait(cond: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinel group: condition not met within {timeout}s")
            time.sleep(0.05)
