"""Worker processes for tests: started with `herder worker`, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

APPS = str(Path(__file__).parent / "apps")


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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log_file:
            self.log_file.close()
