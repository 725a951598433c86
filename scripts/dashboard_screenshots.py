"""Regenerate the screenshots in docs/dashboard.md.

    python scripts/dashboard_screenshots.py            # writes docs/img/dashboard-*.png

Starts its own redis-server, a real `herder worker` process running the fake Claude Code CLI
(tests/fakes/claude), the dashboard, and headless Chromium; everything it starts is stopped by
PID at the end. The jobs are real; only the trend history is synthesised (three hours of
per-minute samples cannot be waited for), and the page says nothing to the contrary: the
samples have the same shape workers write.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # weblib, shared with the bench

from herder import trends
from herder.client import HerderClient
from herder.dashboard import create_app
from herder.localredis import LocalRedis
from herder.settings import HerderSettings
from weblib import chromium_path, launch_chromium, serving

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
FAKE = ROOT / "tests" / "fakes" / "claude"
TOKEN = "screenshot-token"


async def seed(settings: HerderSettings) -> dict[str, str]:
    async with HerderClient(settings) as c:
        await c.pause("emails")
        for i in range(40):
            await c.enqueue("emails", "echo", {"to": f"user{i}@example.com"}, labels={"tenant": f"t{i % 3}"})
        await c.enqueue("reports", "sleep", {"seconds": 1}, delay=3600, id="nightly-report")
        parent = await c.enqueue("default", "sleep", {"seconds": 30}, id="fetch-repo")
        await c.enqueue("default", "echo", {"step": "test"}, id="run-tests", after=[parent.id])
        await c.enqueue("default", "echo", {"step": "lint"}, id="run-lint", after=[parent.id])
        await c.enqueue("default", "echo", {"step": "report"}, id="open-pr", after=["run-tests", "run-lint"])
        for i in range(3):
            await c.enqueue("default", "fail", {"message": f"upstream returned 502 ({i})"}, max_attempts=2)
        cc = await c.enqueue(
            "default",
            "claude_code",
            {"prompt": "Fix the failing test in utils.py. FAKE:turns=4 FAKE:sleep=1", "max_turns": 10},
            id="claude-fix-utils",
        )
        return {"claude": cc.id}


async def fake_history(settings: HerderSettings) -> None:
    """Three hours of samples, shaped like a working day (the only synthetic data here)."""
    async with HerderClient(settings) as c:
        keys = c.keys("default")
        sec, _ = await c.redis.time()
        now_m = int(sec) // 60
        cum = [0, 0, 0, 0, 0]
        rows = {}
        for k in range(180, 0, -1):
            m = now_m - k
            load = 30 + 25 * math.sin(k / 25) + (k % 7)
            rate = [int(load), int(load * 0.93), int(load * 0.05), int(load * 0.02), 0]
            cum = [a + b for a, b in zip(cum, rate, strict=True)]
            ready = max(0, int(40 * math.sin(k / 18)) + 10)
            workers = 2 + (ready > 30)
            row = [*cum, ready, 2, 1, min(10 * workers, int(load / 4)), cum[3], workers, 10 * workers,
                   min(10 * workers, int(load / 4)), 800 + ready * 120, 2500 + ready * 400, 4000 + ready * 600]  # fmt: skip
            rows[str(m)] = ",".join(str(x) for x in row)
        await c.redis.hset(keys.trend, mapping=rows)
        await trends.record(c.redis, keys, lease_ms=int(settings.lease_seconds * 1000))


async def wait_state(settings: HerderSettings, job_id: str, states: set[str], timeout: float = 90) -> None:
    async with HerderClient(settings) as c:
        deadline = time.monotonic() + timeout
        while (await c.get_job(job_id, "default")).state not in states:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not reach {states}")
            await asyncio.sleep(0.2)


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = chromium_path()
    if chromium is None:
        raise SystemExit("no chromium found: install it or set HERDER_CHROMIUM")
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="herder-shots-"))
    tmp.chmod(0o755)
    redis = LocalRedis(tmp / "redis").start()
    worker = None
    try:
        settings = HerderSettings(redis_url=redis.url, lease_seconds=2)
        ids = asyncio.run(seed(settings))
        env = dict(os.environ)
        env.update(
            HERDER_REDIS_URL=redis.url,
            HERDER_LEASE_SECONDS="2",
            HERDER_CLAUDE_BIN=str(FAKE),
            HERDER_CLAUDE_WORKSPACE_ROOT=str(tmp / "ws"),
            ANTHROPIC_API_KEY="sk-not-a-real-key",
        )
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "herder.cli",
                "worker",
                "default",
                "--concurrency",
                "4",
                "--name",
                "worker-a",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        asyncio.run(wait_state(settings, ids["claude"], {"succeeded", "dead"}))
        asyncio.run(fake_history(settings))
        with serving(create_app(settings, token=TOKEN)) as url, sync_playwright() as p:
            b = launch_chromium(p, chromium)
            page = b.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{url}/#token={TOKEN}")
            expect(page.locator('#queues tr[data-queue="emails"]')).to_be_visible()
            page.screenshot(path=str(OUT / "dashboard-queues.png"))
            page.goto(f"{url}/#/queue/default/dead")
            expect(page.locator("#trends canvas")).to_have_count(4)
            expect(page.locator("#jobs tbody tr").first).to_be_visible()
            page.screenshot(path=str(OUT / "dashboard-queue.png"), full_page=True)
            page.goto(f"{url}/#/job/default/{ids['claude']}")
            expect(page.locator("#job-state")).to_have_text("succeeded")
            expect(page.locator("#feed")).to_contain_text("result")
            page.screenshot(path=str(OUT / "dashboard-claude-run.png"), full_page=True)
            page.goto(f"{url}/#/job/default/run-tests")
            expect(page.locator("#graph svg")).to_be_visible()
            page.screenshot(path=str(OUT / "dashboard-job-graph.png"))
            b.close()
        print("wrote", ", ".join(sorted(p.name for p in OUT.glob("dashboard-*.png"))))
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
