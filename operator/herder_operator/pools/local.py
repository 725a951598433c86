"""Local pool: `herder worker` processes on this machine, stopped by PID (laptop mode, e2e harness).

Behaves like a Deployment: it keeps `replicas` processes alive (replacing ones that exit) and,
on scale-down, stops exactly the members it is told to remove, with SIGTERM (drain, then exit).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from herder_operator.spec import TaskQueueSpec


class LocalPool:
    def __init__(
        self,
        name: str,
        spec: TaskQueueSpec,
        redis_url: str,
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        replicas: int | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.redis_url = redis_url
        self.base_env = dict(os.environ if env is None else env)
        self.log_dir = log_dir
        self._replicas = spec.min_replicas if replicas is None else replicas
        self._token = secrets.token_hex(2)  # distinct ids across runs sharing one Redis
        self._seq = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.started_total = 0
        self.exited: dict[str, int] = {}  # id -> exit code, for the harness to check

    # ---- Pool protocol -------------------------------------------------------------------

    async def replicas(self) -> int:
        return self._replicas

    async def members(self) -> list[str]:
        self._reap()
        self._fill()
        return sorted(self.procs)

    async def scale_to(self, replicas: int, remove: Sequence[str] = ()) -> None:
        for wid in remove:
            self._stop(wid)
        self._replicas = max(0, replicas)
        # More alive than wanted (not named): stop the newest, as a ReplicaSet would.
        while len(self.procs) > self._replicas:
            self._stop(max(self.procs, key=lambda k: int(k.rsplit("-", 1)[1])))
        self._fill()

    async def mark(self, draining: Sequence[str]) -> None:
        return None  # scale_to stops exactly the named processes: no ranking to influence

    async def removal_blocker(self, replicas: int, remove: Sequence[str]) -> str | None:
        return None

    # ---- processes -----------------------------------------------------------------------

    def command(self, wid: str) -> list[str]:
        w = self.spec.worker
        cmd = [
            sys.executable,
            "-m",
            "herder.cli",
            "worker",
            self.spec.queue,
            "--concurrency",
            str(w.concurrency),
            "--name",
            wid,
            "--drain-timeout",
            str(self.spec.drain_timeout_seconds),
        ]
        if w.app:
            cmd += ["--app", w.app]
        for cap in w.capabilities:
            cmd += ["--capability", cap]
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(self.base_env)
        env.update({e.name: e.value for e in self.spec.worker.env if e.value is not None})
        env["HERDER_REDIS_URL"] = self.redis_url
        if self.spec.redis.key_prefix:
            env["HERDER_KEY_PREFIX"] = self.spec.redis.key_prefix
        if self.spec.redis.cluster:
            env["HERDER_REDIS_CLUSTER"] = "true"
        env.pop("HERDER_WORKER_NAME", None)  # --name decides
        return env

    def _start(self) -> None:
        self._seq += 1
        wid = f"{self.name}-{self._token}-{self._seq}"
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._logs[wid] = open(self.log_dir / f"{wid}.log", "ab")
            out = self._logs[wid]
        self.procs[wid] = subprocess.Popen(
            self.command(wid), env=self.environment(), stdout=subprocess.DEVNULL, stderr=out
        )
        self.started_total += 1

    def _fill(self) -> None:
        while len(self.procs) < self._replicas:
            self._start()

    def _stop(self, wid: str) -> None:
        proc = self.procs.pop(wid, None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        self.stopping[wid] = (proc, time.monotonic())

    def _reap(self) -> None:
        for wid, proc in list(self.procs.items()):
            if proc.poll() is not None:  # crashed or exited by itself: replaced by _fill
                self.exited[wid] = proc.returncode
                del self.procs[wid]
                self._close_log(wid)
        for wid, (proc, _) in list(self.stopping.items()):
            if proc.poll() is not None:
                self.exited[wid] = proc.returncode
                del self.stopping[wid]
                self._close_log(wid)

    def _close_log(self, wid: str) -> None:
        f = self._logs.pop(wid, None)
        if f is not None:
            f.close()

    def pids(self) -> dict[str, int]:
        return {wid: p.pid for wid, p in self.procs.items()}

    def close(self, timeout: float | None = None) -> None:
        """Stop every process: SIGTERM (drain), then SIGKILL after the drain timeout."""
        for wid in list(self.procs):
            self._stop(wid)
        limit = (self.spec.drain_timeout_seconds + 10) if timeout is None else timeout
        deadline = time.monotonic() + limit
        for _wid, (proc, _) in list(self.stopping.items()):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._reap()
        self._replicas = 0
