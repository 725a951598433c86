"""Dashboard latency with many queues and one huge queue, on a private redis-server.

    python bench/dashboard.py                        # 10k queues, 1M jobs in one queue, ~1-2 min
    python bench/dashboard.py --queues 1000 --jobs 100000 --repeat 10   # quick smoke run

Fills Redis server-side with a Lua script (chunks of 50k): --queues queues with one ready job
each, and one queue `big` with --jobs jobs (90% ready, 10% dead), job hashes shaped like
enqueue.lua writes them. Then times each API call --repeat times over real HTTP (uvicorn on
127.0.0.1, one client, sequential) and, when Chromium is installed, the page itself: from
navigation to the first rendered row. Prints p50/p95 and response size per call.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import RedisServer, fmt, machine, percentile, progress, table
from herder import trends
from herder.client import HerderClient
from herder.dashboard import create_app
from herder.settings import HerderSettings
from weblib import chromium_path, launch_chromium, serving

TOKEN = "bench-token"

FILL = """
-- KEYS: none (a private bench server). ARGV: base, from, to, dead_from, now_ms
local base, a, b, dead_from, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
for i = a, b do
  local id = 'job-' .. i
  local dead = i >= dead_from
  redis.call('HSET', base .. ':job:' .. id, 'id', id, 'queue', string.match(base, '{(.*)}'),
    'task', (i % 1000 == 0) and 'sleep' or 'echo', 'payload', '{"i":' .. i .. '}', 'priority', 0,
    'state', dead and 'dead' or 'ready', 'attempts', dead and 1 or 0, 'max_attempts', 1,
    'backoff', '{}', 'timeout', '', 'parents', '[]', 'run_regardless', '0', 'caps', '',
    'labels', '{"tenant":"t' .. (i % 7) .. '"}', 'enqueued_at', now, 'run_at', '', 'seq', i,
    'errors', '[]', 'pending', 0, 'dead_reason', dead and 'RuntimeError: bench' or '')
  if dead then
    redis.call('ZADD', base .. ':dead', now + i, id)
  else
    redis.call('ZADD', base .. ':ready', 1000 * 1099511627776 + i, id)
  end
end
redis.call('HINCRBY', base .. ':stats', 'enqueued', b - a + 1)
return b - a + 1
"""


def fill(srv: RedisServer, queues: int, jobs: int) -> None:
    r = srv.sync()
    script = r.register_script(FILL)
    now = str(int(time.time() * 1000))
    names = [f"q-{i:05d}" for i in range(queues)]
    t0 = time.monotonic()
    pipe = r.pipeline(transaction=False)
    for n in names:
        script(args=[f"herder:{{{n}}}", 1, 1, 2, now], client=pipe)
    for i in range(0, len(names), 10_000):
        pipe.sadd("herder:queues", *names[i : i + 10_000])
    pipe.execute()
    r.sadd("herder:queues", "big")
    dead_from = int(jobs * 0.9)
    step = 50_000
    for a in range(0, jobs, step):
        script(args=["herder:{big}", a, min(jobs, a + step) - 1, dead_from, now])
    progress(f"filled {queues} queues and {jobs} jobs in {time.monotonic() - t0:.1f} s")


def time_calls(url: str, calls: list[tuple[str, str]], repeat: int) -> list[list[str]]:
    rows = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as c:
        for label, path in calls:
            first = time.perf_counter()
            r = c.get(path)
            cold = (time.perf_counter() - first) * 1000
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            ts = []
            for _ in range(repeat):
                t = time.perf_counter()
                r = c.get(path)
                ts.append((time.perf_counter() - t) * 1000)
            rows.append(
                [
                    label,
                    fmt(cold, 1),
                    fmt(percentile(ts, 50), 1),
                    fmt(percentile(ts, 95), 1),
                    f"{len(r.content):,}",
                ]
            )
            progress(f"{label}: p50 {percentile(ts, 50):.1f} ms")
    return rows


def sse_first_event(url: str, job_id: str, repeat: int) -> list[str]:
    ts = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        for _ in range(repeat):
            t = time.perf_counter()
            with c.stream("GET", f"/api/jobs/{job_id}/events?queue=big") as r:
                for line in r.iter_lines():
                    if line.startswith("event: snapshot"):
                        ts.append((time.perf_counter() - t) * 1000)
                        break
    return [
        "SSE: connect to first event (job in `big`)",
        "",
        fmt(percentile(ts, 50), 1),
        fmt(percentile(ts, 95), 1),
        "",
    ]


def page_times(url: str, repeat: int) -> list[list[str]]:
    chromium = chromium_path()
    if not chromium:
        progress("chromium not installed: page timings skipped")
        return []
    from playwright.sync_api import expect, sync_playwright

    rows = []
    with sync_playwright() as p:
        b = launch_chromium(p, chromium)
        page = b.new_page()
        page.goto(f"{url}/#token={TOKEN}")
        expect(page.locator("#queues tbody tr").first).to_be_visible(timeout=120_000)
        for label, hash_, selector in (
            ("page: shell only (no data; baseline)", "static/app.css?r={}", "body"),
            ("page: queues (10k), first rows", "#/?r={}", "#queues tbody tr"),
            ("page: `big` ready tab, first rows", "#/queue/big/ready?r={}", "#jobs tbody tr"),
            ("page: `big` dead tab, first rows", "#/queue/big/dead?r={}", "#jobs tbody tr"),
            ("page: a job in `big`", "#/job/big/job-5?r={}", "#job-state"),
        ):
            ts = []
            for i in range(repeat):
                page.goto("about:blank")
                t = time.perf_counter()
                page.goto(f"{url}/{hash_.format(i)}")
                expect(page.locator(selector).first).to_be_visible(timeout=120_000)
                ts.append((time.perf_counter() - t) * 1000)
            rows.append([label, "", fmt(percentile(ts, 50), 1), fmt(percentile(ts, 95), 1), ""])
            progress(f"{label}: p50 {percentile(ts, 50):.1f} ms")
        b.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queues", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    with RedisServer() as srv:
        fill(srv, args.queues, args.jobs)
        settings = HerderSettings(redis_url=srv.url)

        async def sample() -> None:
            async with HerderClient(settings) as c:
                await trends.record(c.redis, c.keys("big"), lease_ms=10_000)

        asyncio.run(sample())
        with serving(create_app(settings, token=TOKEN)) as url:
            n = args.queues
            mid = args.jobs // 2
            calls = [
                ("GET / (the page)", "/"),
                (f"queues: first page of {n + 1:,}", "/api/queues?limit=50"),
                ("queues: a page in the middle", f"/api/queues?limit=50&offset={n // 2}"),
                ("queues: name filter", "/api/queues?limit=50&q=q-0999"),
                ("queue `big`: status", "/api/queues/big"),
                ("jobs `big` ready: first page", "/api/queues/big/jobs?state=ready&limit=50"),
                ("jobs `big` ready: deep page", f"/api/queues/big/jobs?state=ready&limit=50&cursor={mid}"),
                ("jobs `big` dead: first page", "/api/queues/big/jobs?state=dead&limit=50"),
                (
                    "jobs `big` ready: task filter (1 in 1000)",
                    "/api/queues/big/jobs?state=ready&limit=50&task=sleep",
                ),
                (
                    "jobs `big` ready: label filter",
                    "/api/queues/big/jobs?state=ready&limit=50&label=tenant=t3",
                ),
                ("job in `big` (queue in link)", f"/api/jobs/job-{mid}?queue=big"),
                (f"job by id alone (looked up in {n + 1:,} queues)", f"/api/jobs/job-{mid}"),
                ("trends `big` (3 h)", "/api/queues/big/trends?minutes=180"),
            ]
            rows = time_calls(url, calls, args.repeat)
            rows.append(sse_first_event(url, f"job-{mid}", args.repeat))
            rows += page_times(url, max(3, args.repeat // 4))
        print()
        print(f"Dashboard, {args.queues:,} queues + one queue of {args.jobs:,} jobs; {machine()}; "
              f"redis-server {srv.version()}; {args.repeat} repeats")  # fmt: skip
        print()
        print(table(["call", "cold ms", "p50 ms", "p95 ms", "bytes"], rows))
        info: dict[str, Any] = srv.sync().info("memory")  # type: ignore[assignment]
        print(f"\nRedis used_memory: {info['used_memory_human']}")


if __name__ == "__main__":
    main()
