"""BullMQ beside Herder and arq: installs Node's `bullmq` (and `ioredis`, its Redis driver) with
npm into a temp folder, cached there between runs and never inside the repo, and runs
bench/bullmq/driver.mjs against the bench's redis-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchlib import progress

BULLMQ_VERSION = "6.7.0"
IOREDIS_VERSION = "5.11.1"  # the ioredis version BullMQ 6.7.0 itself is developed against
DRIVER = Path(__file__).resolve().parent / "bullmq" / "driver.mjs"


def default_prefix() -> Path:
    return Path(tempfile.gettempdir()) / f"herder-bench-bullmq-{BULLMQ_VERSION}-ioredis-{IOREDIS_VERSION}"


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()


def installed_version(prefix: Path, package: str) -> str | None:
    manifest = prefix / "node_modules" / package / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


def install(prefix: Path | None = None) -> Path:
    """npm install the pinned versions into `prefix` unless they are already there."""
    prefix = prefix or default_prefix()
    if (
        installed_version(prefix, "bullmq") == BULLMQ_VERSION
        and installed_version(prefix, "ioredis") == IOREDIS_VERSION
    ):
        return prefix
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: the BullMQ side of the bench needs Node.js and npm")
    progress(f"npm install bullmq@{BULLMQ_VERSION} ioredis@{IOREDIS_VERSION} into {prefix}")
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
         f"bullmq@{BULLMQ_VERSION}", f"ioredis@{IOREDIS_VERSION}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return prefix


class BullMQ:
    """One BullMQ queue on the bench's redis-server, driven by Node processes."""

    def __init__(self, prefix: Path, url: str, queue: str = "bench") -> None:
        self.prefix = prefix
        self.url = url
        self.queue = queue

    def _env(self, count_file: Path | None = None) -> dict[str, str]:
        env = dict(os.environ, BULLMQ_PREFIX=str(self.prefix), BENCH_REDIS_URL=self.url)
        env.pop("BENCH_COUNT_FILE", None)
        if count_file is not None:
            env["BENCH_COUNT_FILE"] = str(count_file)
        return env

    def add(self, n: int, *, warmup: int = 0, parallel: int = 1) -> dict[str, Any]:
        """`n` Queue.add calls from one Node process: {"latencies": [ms...] (sequential only),
        "counts": {"commands", "round_trips"} over those n adds}."""
        args = ["node", str(DRIVER), "add", self.queue, str(n), "--warmup", str(warmup)]
        args += ["--parallel", str(parallel)]
        out = subprocess.run(args, env=self._env(), check=True, capture_output=True, text=True)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def spawn_worker(
        self, concurrency: int, *, expect: int = 0, count_file: Path | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """One BullMQ Worker process; with `expect` it exits after that many jobs completed."""
        args = ["node", str(DRIVER), "work", self.queue, str(concurrency)]
        if expect:
            args += ["--expect", str(expect)]
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        return subprocess.Popen(args, env=self._env(count_file), stdout=out, stderr=out)

    def completed_key(self) -> str:
        return f"bull:{self.queue}:completed"

    def window(self, r: Any) -> tuple[float, float, int]:
        """(first processedOn, last finishedOn) as epoch seconds over the completed jobs, and
        how many."""
        ids = [str(i) for i in r.zrange(self.completed_key(), 0, -1)]
        rows: list[Any] = []
        for start in range(0, len(ids), 1000):
            pipe = r.pipeline(transaction=False)
            for i in ids[start : start + 1000]:
                pipe.hmget(f"bull:{self.queue}:{i}", "processedOn", "finishedOn")
            rows += pipe.execute()
        done = [(int(a), int(b)) for a, b in rows if a and b]
        if not done:
            return 0.0, 0.0, 0
        return min(a for a, _ in done) / 1000, max(b for _, b in done) / 1000, len(done)
