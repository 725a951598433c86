"""The dashboard, driven in real Chromium (Playwright, system chromium), against a real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import uvicorn

from herder.dashboard import create_app
from herder.settings import HerderSettings
from redis_proc import RedisProc

CHROMIUM = os.environ.get("HERDER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, settings: HerderSettings, token: str | None) -> None:
        self.port = _free_port()
        config = uvicorn.Config(
            create_app(settings, token=token), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "dashboard did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def seeded(redis_server: RedisProc) -> redis.Redis:
    """A queue with ready jobs and one dead job, written through the real CLI path."""
    import asyncio

    from helpers import running_worker, wait_state
    from herder.client import HerderClient

    settings = HerderSettings(redis_url=redis_server.url, lease_seconds=2)

    async def seed() -> None:
        async with HerderClient(settings) as c:
            async with running_worker(settings, "web"):
                dead = await c.enqueue(
                    "web", "fail", {"message": "broken on purpose"}, max_attempts=1, id="doomed"
                )
                await wait_state(c, dead.id, "dead")
            for i in range(3):
                await c.enqueue("web", "echo", {"i": i}, id=f"r{i}")

    asyncio.run(seed())
    return redis.Redis(port=redis_server.port, decode_responses=True)


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        try:
            yield b
        finally:
            b.close()


def test_dashboard_shows_queues_workers_dlq_and_operates(
    seeded: redis.Redis, redis_server: RedisProc, browser: object
) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=None) as srv:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(srv.url)
        row = page.locator('#queues tr[data-queue="web"]')
        row.locator("td.ready").wait_for()
        page.wait_for_function(
            "document.querySelector('#queues tr[data-queue=web] td.ready').textContent === '3'"
        )
        assert row.locator("td.dead").text_content() == "1"
        # the DLQ shows the failure with its reason
        dlq_row = page.locator('#dlq tr[data-job="doomed"]')
        dlq_row.wait_for()
        assert "broken on purpose" in (dlq_row.text_content() or "")
        # pause from the page: Redis says paused
        row.get_by_role("button", name="Pause").click()
        page.wait_for_function(
            "document.querySelector('#queues tr[data-queue=web] td.state').textContent === 'paused'"
        )
        assert seeded.exists("herder:{web}:paused")
        row.get_by_role("button", name="Resume").click()
        page.wait_for_function(
            "document.querySelector('#queues tr[data-queue=web] td.state').textContent === 'running'"
        )
        assert not seeded.exists("herder:{web}:paused")
        # inspect the dead job, then retry it from the DLQ
        page.fill("#job-id", "doomed")
        page.click("#job-form button")
        page.wait_for_function("document.getElementById('job').textContent.includes('broken on purpose')")
        dlq_row.get_by_role("button", name="Retry").click()
        page.wait_for_function("!document.querySelector('#dlq tr[data-job=doomed]')")
        assert seeded.hget("herder:{web}:job:doomed", "state") == "ready"
        # a missing job is reported, not rendered
        page.fill("#job-id", "no-such-job")
        page.click("#job-form button")
        page.wait_for_function("document.getElementById('job-error').textContent.includes('no job')")


def test_operations_need_the_token_when_set(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token="s3cret") as srv:
        assert httpx.get(f"{srv.url}/api/queues").status_code == 200  # reads are open
        r = httpx.post(f"{srv.url}/api/queues/web/pause")
        assert r.status_code == 401 and not seeded.exists("herder:{web}:paused")
        r = httpx.post(f"{srv.url}/api/queues/web/pause", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and not seeded.exists("herder:{web}:paused")
        r = httpx.post(f"{srv.url}/api/queues/web/pause", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and seeded.exists("herder:{web}:paused")


def test_api_errors_are_specific(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=None) as srv:
        assert httpx.get(f"{srv.url}/api/jobs/nope").status_code == 404
        assert httpx.get(f"{srv.url}/api/queues/bad%7Bq%7D").status_code == 400
        assert httpx.post(f"{srv.url}/api/jobs/r0/retry").status_code == 409  # ready, not dead
        assert httpx.get(f"{srv.url}/api/queues/web/dlq?limit=0").status_code == 400
    down = HerderSettings(redis_url="redis://127.0.0.1:1/0", redis_connect_timeout=0.5)
    with Server(down, token=None) as srv:
        r = httpx.get(f"{srv.url}/api/queues")
        assert r.status_code == 503 and "Redis unavailable" in r.json()["detail"]
