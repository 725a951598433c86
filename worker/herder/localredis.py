"""A private redis-server process: local mode's embedded default (`herder up`, the demo), and
the tests' and benchmarks' throwaway servers. Free port, its own directory, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, for a cluster-mode node."""
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


class LocalRedis:
    """`start()` waits until the server answers; `stop()` ends it (and removes the directory when
    it was a temporary one); `kill()` sends a signal, for crash tests; `start()` again restarts
    on the same port and directory (and so the same AOF)."""

    def __init__(
        self,
        directory: Path | None = None,
        port: int | None = None,
        *,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        extra: list[str] | None = None,
    ) -> None:
        self._temporary = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="herder-redis-"))
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found: install it (Debian: apt-get install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "redis.log"
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
            "--logfile",
            str(log),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as r:
                    r.ping()
                    return self
            except (redis.AuthenticationError, redis.ResponseError):
                return self  # it answers: it only wants credentials
            except redis.RedisError:
                pass
            if self.proc.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start: {tail}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._temporary:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
