"""Processes for tests: `herder worker` started and stopped by PID, and how any child is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

APPS = str(Path(__file__).parent / "apps")


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Its exit code once it exits, within `timeout`; after that, SIGKILL."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """`sig` to a child still running, then its exit code (SIGKILL after `timeout`)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return wait_or_kill(proc, timeout)


def chaos_tasks() -> Any:
    """The TaskSet of tests/apps/chaos_app.py, which WorkerProc runs by default."""
    if APPS not in sys.path:
        sys.path.insert(0, APPS)
    from chaos_app import tasks

    return tasks


class WorkerProc:
    def __init__(
        self,
        env: dict[str, str],
        name: str,
        *,
        queue: str = "default",
        concurrency: int = 5,
        app: str | None = "chaos_app",
        drain_timeout: float = 30.0,
        log: Path | None = None,
    ) -> None:
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (APPS, env.get("PYTHONPATH", "")) if p)
        cmd = [
            sys.executable,
            "-m",
            "herder.cli",
            "worker",
            queue,
            "--concurrency",
            str(concurrency),
            "--name",
            name,
            "--drain-timeout",
            str(drain_timeout),
        ]
        if app:
            cmd += ["--app", app]
        self.name = name
        self.log_file = open(log, "ab") if log else None
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log_file or subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.log_file and self.proc.poll() is not None:
                self.log_file.close()

    def stop(self) -> None:
        stop_process(self.proc)
        if self.log_file:
            self.log_file.close()
