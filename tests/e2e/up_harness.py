"""`herder up` as the e2e tests run it: a TaskQueue document with short windows, the command as
a subprocess stopped with SIGINT (what Ctrl-C sends), and polling at the pace of its steps."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from operator_harness import tq_spec

from helpers import wait_for
from herder.client import HerderClient
from procs import stop_process

T = TypeVar("T")


def tq_doc(name: str = "demo", **over: Any) -> dict[str, Any]:
    """The operator e2e tests' TaskQueue for queue `default`, from zero workers; `herder up`
    replaces the Redis URL with its own --redis-url."""
    spec = tq_spec("redis://unused:6379/0", **{"queue": "default", "minReplicas": 0, **over})
    return {
        "apiVersion": "herder.dev/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": name},
        "spec": spec,
    }


async def poll_until(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float) -> T:
    return await wait_for(probe, ok, timeout, every=0.2)


class Workers:
    """A probe for poll_until: the queue's live workers, keeping the most seen in `peak`."""

    def __init__(self, client: HerderClient, queue: str) -> None:
        self.client, self.queue, self.peak = client, queue, 0

    async def __call__(self) -> int:
        n = len((await self.client.status(self.queue)).workers)
        self.peak = max(self.peak, n)
        return n


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log_path: Path
    code: int | None = None  # once stopped

    @property
    def output(self) -> str:
        return self.log_path.read_text()


@contextmanager
def herder_up(path: Path, url: str, env: dict[str, str], log_path: Path) -> Iterator[Up]:
    """`herder up -f path` running for the block; then SIGINT, and SIGKILL after 60 s."""
    cmd = [sys.executable, "-m", "herder.cli", "up", "-f", str(path), "--redis-url", url]
    with open(log_path, "wb") as log:
        up = Up(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log_path)
        try:
            yield up
        finally:
            up.code = stop_process(up.proc, signal.SIGINT, 60)
