"""Claude Code runs at scale: one `herder worker` at concurrency 50 and 100 running fake-CLI
runs (tests/fakes/claude: a few seconds each, with progress), with and without the bwrap sandbox.

    python bench/claude_runs.py                          # 50 and 100, bwrap and uid-drop
    python bench/claude_runs.py --concurrency 10 --sleep 1   # smoke

Per configuration, one wave of `concurrency` runs is enqueued at once onto an idle worker:
- runs/s: runs / (enqueue of the first → end of the last, Redis TIME from the job hashes);
- spawn → first event p50/p99: from starting the CLI (bwrap included) to its first stream-json
  line, as the worker measured it (result.herder.first_event_seconds);
- worker RSS: the worker process alone (its runs are other processes), peak while they ran;
- Redis round trips per run: every request the worker sent (client-side counters) / runs;
- slots held after: the worker's in-flight count in its registry entry once every run ended.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    RedisServer,
    fmt,
    machine,
    percentile,
    progress,
    read_counts,
    rss_mb,
    spawn_herder,
    stop,
    table,
)
from herder.client import HerderClient
from herder.processors.claude_code.bwrap import probe
from herder.settings import HerderSettings

FAKE = Path(__file__).resolve().parent.parent / "tests" / "fakes" / "claude"


def setup_env(base: Path, sandbox: str) -> None:
    """The worker inherits the bench's environment: point its claude_code settings at the fake."""
    bindir = base / "bin"
    bindir.mkdir(mode=0o755, exist_ok=True)
    shutil.copy(FAKE, bindir / "claude")
    (bindir / "claude").chmod(0o755)
    os.environ.update(
        HERDER_CLAUDE_BIN=str(bindir / "claude"),
        HERDER_CLAUDE_WORKSPACE_ROOT=str(base / "workspaces"),
        HERDER_CLAUDE_CHILD_PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        HERDER_CLAUDE_KEEP_ON_FAILURE_SECONDS="0",
        HERDER_CLAUDE_SANDBOX=sandbox,
        ANTHROPIC_API_KEY="sk-ant-bench-not-a-key",
    )


async def one(url: str, base: Path, concurrency: int, sandbox: str, sleep: float) -> dict[str, Any]:
    setup_env(base, sandbox)
    queue = f"cc{concurrency}{sandbox}"
    counts = base / f"{queue}.counts.json"
    worker = spawn_herder(url, queue, concurrency, name=queue, count_file=counts, log=base / f"{queue}.log")
    peak = 0.0
    try:
        async with HerderClient(HerderSettings(redis_url=url)) as client:
            for _ in range(600):  # the worker registers itself
                if (await client.status(queue)).workers:
                    break
                await asyncio.sleep(0.05)
            prompt = f"Bench. FAKE:turns=3 FAKE:sleep={sleep}"
            ids = [
                (await client.enqueue(queue, "claude_code", {"prompt": prompt})).id
                for _ in range(concurrency)
            ]
            while True:
                peak = max(peak, rss_mb(worker.pid))
                st = await client.status(queue)
                if st.ready == st.active == st.scheduled == 0:
                    break
                if worker.poll() is not None:
                    raise RuntimeError("the worker exited")
                await asyncio.sleep(0.2)
            jobs = [await client.get_job(i, queue) for i in ids]
            held = -1
            for _ in range(50):
                st = await client.status(queue)
                held = sum(w.in_flight for w in st.workers)
                if held == 0:
                    break
                await asyncio.sleep(0.1)
        done = [j for j in jobs if j.state == "succeeded"]
        first = [float(j.result["herder"]["first_event_seconds"]) * 1000 for j in done]
        start = min(j.enqueued_at or 0 for j in jobs)
        end = max(j.finished_at or 0 for j in jobs)
        sent = read_counts(counts, worker)
    finally:
        stop(worker)
    return {
        "concurrency": concurrency,
        "sandbox": sandbox,
        "ok": f"{len(done)}/{len(jobs)}",
        "runs_s": len(done) / (end - start) if end > start else float("nan"),
        "p50": percentile(first, 50) if first else float("nan"),
        "p99": percentile(first, 99) if first else float("nan"),
        "rss": peak,
        "rt": sent.get("round_trips", 0) / max(1, len(jobs)),
        "held": held,
    }


async def run_all(base: Path, concurrency: list[int], modes: list[str], sleep: float) -> list[dict[str, Any]]:
    rows = []
    with RedisServer() as server:
        for c in concurrency:
            for mode in modes:
                progress(f"concurrency {c}, sandbox {mode}")
                t0 = time.monotonic()
                rows.append(await one(server.url, base, c, mode, sleep))
                progress(f"  done in {time.monotonic() - t0:.1f} s")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--sleep", type=float, default=3.0, help="seconds each fake run sleeps")
    args = ap.parse_args()
    uid = 65534 if os.geteuid() == 0 else None
    found = probe("bwrap", uid, uid)
    modes = ["bwrap", "none"] if found.sandboxed else ["none"]
    if not found.sandboxed:
        progress(f"bwrap unusable here ({found.reason}): uid-drop only")
    base = Path(tempfile.mkdtemp(prefix="herder-bench-cc-"))
    base.chmod(0o755)  # the run uid (root workers) must reach the fake CLI and workspaces
    try:
        rows = asyncio.run(run_all(base, args.concurrency, modes, args.sleep))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{machine()}; fake runs of ~{args.sleep:g} s (3 turns, progress every 0.5 s)\n")
    headers = [
        "concurrency",
        "sandbox",
        "succeeded",
        "runs/s",
        "spawn→first event p50 ms",
        "p99 ms",
        "worker RSS MB (peak)",
        "Redis round trips/run",
        "slots held after",
    ]
    print(
        table(
            headers,
            [
                [
                    r["concurrency"],
                    "bwrap" if r["sandbox"] == "bwrap" else "uid-drop",
                    r["ok"],
                    fmt(r["runs_s"]),
                    fmt(r["p50"], 0),
                    fmt(r["p99"], 0),
                    fmt(r["rss"], 1),
                    fmt(r["rt"], 1),
                    r["held"],
                ]
                for r in rows
            ],
        )
    )


if __name__ == "__main__":
    main()
