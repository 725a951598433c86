"""The dashboard over real HTTP and in real Chromium (Playwright, system chromium), against a real
redis-server and real workers: security rules, browsing, bulk operations, live job pages."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import expect

from api_server import ThreadedServer
from herder import trends
from herder.dashboard import create_app
from herder.settings import HerderSettings
from redis_proc import RedisProc, free_port

CHROMIUM = os.environ.get("HERDER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "op-s3cret"
READ = "read-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Server(ThreadedServer):
    def __init__(
        self,
        settings: HerderSettings,
        token: str | None,
        *,
        read_token: str | None = None,
        allowed_hosts: Iterable[str] = (),
        max_streams: int = 64,
    ) -> None:
        app = create_app(
            settings,
            token=token or "",
            read_token=read_token or "",
            allowed_hosts=list(allowed_hosts),
            max_streams=max_streams,
        )
        super().__init__(app, timeout_graceful_shutdown=2)


@pytest.fixture
def seeded(redis_server: RedisProc) -> redis.Redis:
    """Queue `web`: one dead job (failed for real through a worker), three ready ones."""
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
                await c.enqueue("web", "echo", {"i": i}, id=f"r{i}", labels={"team": "a" if i else "b"})
            # what workers do each minute (the seeding worker's own sample predates these jobs)
            await c.redis.delete(c.keys("web").trend)
            await trends.record(c.redis, c.keys("web"), lease_ms=2000)
            hostile = '<img src=x onerror="window.__pwned=1">'
            event = {"type": "assistant", "message": {"content": [{"type": "text", "text": hostile}]}}
            await c.redis.rpush(c.keys("web").log("doomed"), json.dumps(event))

    asyncio.run(seed())
    return redis.Redis(port=redis_server.port, decode_responses=True)


def _launch(p: Any, *extra: str) -> Any:
    return p.chromium.launch(
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
            *extra,
        ],
    )


@pytest.fixture
def playwright() -> Iterator[Any]:
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Any) -> Iterator[Any]:
    b = _launch(playwright)
    try:
        yield b
    finally:
        b.close()


def _page_with_token(browser: Any, url: str, token: str = TOKEN) -> Any:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    # The token handed over in the fragment, as `herder dashboard` prints it.
    page.goto(f"{url}/#token={token}")
    expect(page).not_to_have_url(re.compile("token="))
    return page


# ---- safe by default (HTTP) ------------------------------------------------------------------


def test_operations_always_need_the_operate_token(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=None) as srv:  # no token at all: reads open, operations refused
        assert httpx.get(f"{srv.url}/api/queues").status_code == 200
        r = httpx.post(f"{srv.url}/api/queues/web/pause")
        assert r.status_code == 403 and "no operate token" in r.json()["detail"]
        assert not seeded.exists("herder:{web}:paused")
    with Server(settings, token=TOKEN, read_token=READ) as srv:
        # reads are protected once a token is set: payloads, results and tracebacks are private
        assert httpx.get(f"{srv.url}/api/queues").status_code == 401
        assert httpx.get(f"{srv.url}/api/jobs/doomed?queue=web").status_code == 401
        assert httpx.get(f"{srv.url}/api/queues", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert (
            httpx.get(f"{srv.url}/api/queues", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
        )
        # the bare token without the scheme is not accepted, nor a cookie, nor a query parameter
        assert httpx.get(f"{srv.url}/api/queues", headers={"Authorization": TOKEN}).status_code == 401
        assert httpx.get(f"{srv.url}/api/queues", cookies={"token": TOKEN}).status_code == 401
        assert httpx.get(f"{srv.url}/api/queues?token={TOKEN}").status_code == 401
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {READ}"}):
            r = httpx.post(f"{srv.url}/api/queues/web/pause", headers=headers)
            assert r.status_code in (401, 403) and not seeded.exists("herder:{web}:paused")
        r = httpx.post(f"{srv.url}/api/queues/web/pause", headers=AUTH)
        assert r.status_code == 200 and seeded.exists("herder:{web}:paused")
        # the page itself and its assets load without a token (they hold no data)
        assert httpx.get(srv.url).status_code == 200
        assert httpx.get(f"{srv.url}/static/app.js").status_code == 200
        assert httpx.get(f"{srv.url}/api/config").json() == {
            "read_auth": True,
            "ops": True,
            "version": "0.1.0",
        }


def test_csrf_and_host_checks_refuse_and_change_nothing(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=TOKEN) as srv:
        url = f"{srv.url}/api/queues/web/pause"
        for headers, status in (
            ({"Origin": "http://evil.example"}, 403),
            ({"Origin": "null"}, 403),
            ({"Sec-Fetch-Site": "cross-site"}, 403),
            ({"Host": "evil.example"}, 421),
        ):
            r = httpx.post(url, headers={**AUTH, **headers})
            assert r.status_code == status, (headers, r.text)
            assert not seeded.exists("herder:{web}:paused")
        assert httpx.get(f"{srv.url}/api/queues", headers={**AUTH, "Host": "evil.example"}).status_code == 421
        r = httpx.post(url, headers={**AUTH, "Origin": srv.url})
        assert r.status_code == 200 and seeded.exists("herder:{web}:paused")


def test_security_headers_no_docs_ui_and_body_cap(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=TOKEN) as srv:
        for path in ("/", "/api/config", "/static/app.js", "/nope"):
            h = httpx.get(srv.url + path).headers
            csp = h["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
            assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert httpx.get(f"{srv.url}/api/config").headers["cache-control"] == "no-store"
        html = httpx.get(srv.url).text
        assert (
            "<script>" not in html and "<style>" not in html and "http" not in html.replace("http-equiv", "")
        )
        for path in ("/docs", "/redoc", "/api/docs", "/openapi.json", "/api/openapi.json"):
            assert httpx.get(srv.url + path, headers=AUTH).status_code == 404, path
        big = json.dumps({"action": "retry", "ids": ["x" * 100] * 20_000})
        r = httpx.post(
            f"{srv.url}/api/queues/web/jobs/bulk",
            content=big,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert r.status_code == 413


def test_cli_refuses_open_non_loopback_bind(worker_env: dict[str, str]) -> None:
    env = {k: v for k, v in worker_env.items() if not k.startswith("HERDER_DASHBOARD")}

    def on_any_address() -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "herder.cli", "dashboard", "--host", "0.0.0.0"]
        cmd += ["--port", str(free_port())]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    r = on_any_address()
    assert r.returncode == 2 and "without a token" in r.stderr
    env["HERDER_DASHBOARD_TOKEN"] = TOKEN
    r = on_any_address()
    assert r.returncode == 2 and "--allowed-host" in r.stderr


def test_cli_on_loopback_makes_a_token_for_the_run(worker_env: dict[str, str], seeded: redis.Redis) -> None:
    env = {k: v for k, v in worker_env.items() if not k.startswith("HERDER_DASHBOARD")}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "herder.cli", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # printed before the server starts
        m = re.search(rf"http://127\.0\.0\.1:{port}/#token=([A-Za-z0-9_-]{{32,}})", line)
        assert m, line
        token = m.group(1)
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/queues")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.05)
        assert r.status_code == 401  # reads are protected by the generated token
        ok = httpx.get(f"http://127.0.0.1:{port}/api/queues", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["items"][0]["queue"] == "web"
    finally:
        proc.terminate()
        proc.wait(30)


# ---- bounded, paginated, corrupt-tolerant reads -----------------------------------------------


def test_lists_are_paginated_and_values_capped(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    big = "x" * 300_000
    seeded.hset("herder:{web}:job:doomed", "result", json.dumps({"blob": big}))
    # Corrupt or hostile data in Redis: junk queue names in the index, a job hash with bad JSON.
    seeded.sadd("herder:queues", "bad{name}", "x" * 5000, "")
    seeded.hset("herder:{web}:job:r2", mapping={"payload": "{not json", "labels": "[1,2]"})
    with Server(settings, token=TOKEN) as srv:
        qs = httpx.get(f"{srv.url}/api/queues?limit=1", headers=AUTH).json()
        assert qs["total"] == 1 and [q["queue"] for q in qs["items"]] == ["web"]
        assert httpx.get(f"{srv.url}/api/queues?limit=100000", headers=AUTH).status_code == 422
        j = httpx.get(f"{srv.url}/api/jobs/doomed?queue=web", headers=AUTH)
        assert j.status_code == 200 and len(j.content) < 20_000
        body = j.json()
        assert body["truncated"] == ["result"] and body["result"]["_truncated"] is True
        full = httpx.get(f"{srv.url}/api/jobs/doomed/raw/result?queue=web", headers=AUTH)
        assert full.status_code == 200 and json.loads(full.content)["blob"] == big
        assert "attachment" in full.headers["content-disposition"]
        r2 = httpx.get(f"{srv.url}/api/jobs/r2?queue=web", headers=AUTH).json()
        assert r2["payload"]["_corrupt"] is True and r2["labels"] == {}
        page1 = httpx.get(f"{srv.url}/api/queues/web/jobs?state=ready&limit=2", headers=AUTH).json()
        assert page1["total"] == 3 and len(page1["items"]) == 2 and page1["next_cursor"] == 2
        page2 = httpx.get(
            f"{srv.url}/api/queues/web/jobs?state=ready&limit=2&cursor={page1['next_cursor']}", headers=AUTH
        ).json()
        ids = [x["id"] for x in page1["items"] + page2["items"]]
        assert sorted(ids) == ["r0", "r1", "r2"] and page2["next_cursor"] is None
        assert page1["counts"] == {
            "ready": 3, "scheduled": 0, "waiting": 0, "active": 0, "dead": 1, "succeeded": 0, "cancelled": 0,
        }  # fmt: skip
        f = httpx.get(f"{srv.url}/api/queues/web/jobs?state=ready&label=team=a", headers=AUTH).json()
        assert sorted(x["id"] for x in f["items"]) == ["r1"]  # r2's labels are corrupt: no match
        f = httpx.get(f"{srv.url}/api/queues/web/jobs?state=ready&text=r0", headers=AUTH).json()
        assert [x["id"] for x in f["items"]] == ["r0"]
        f = httpx.get(f"{srv.url}/api/queues/web/jobs?state=dead&task=fail", headers=AUTH).json()
        assert [x["id"] for x in f["items"]] == ["doomed"]
        t = httpx.get(f"{srv.url}/api/queues/web/trends?minutes=30", headers=AUTH).json()["series"]
        assert len(t["t"]) == 30 and 3.0 in t["ready"]
        assert httpx.get(f"{srv.url}/api/queues/web/trends?minutes=100000", headers=AUTH).status_code == 422
        bad = httpx.get(f"{srv.url}/api/queues/web/jobs?state=bogus", headers=AUTH)
        assert bad.status_code == 400 and "unknown state" in bad.json()["detail"]
        assert httpx.get(f"{srv.url}/api/jobs/nope?queue=web", headers=AUTH).status_code == 404
        assert httpx.get(f"{srv.url}/api/queues/bad%7Bq%7D", headers=AUTH).status_code == 400
        assert httpx.post(f"{srv.url}/api/jobs/r0/retry?queue=web", headers=AUTH).status_code == 409
        assert httpx.get(f"{srv.url}/api/jobs/doomed/raw/secret?queue=web", headers=AUTH).status_code == 400
    down = HerderSettings(redis_url="redis://127.0.0.1:1/0", redis_connect_timeout=0.5)
    with Server(down, token=TOKEN) as srv:
        r = httpx.get(f"{srv.url}/api/queues", headers=AUTH)
        assert r.status_code == 503 and "Redis unavailable" in r.json()["detail"]


def test_event_stream_resumes_with_last_event_id(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    log = "herder:{web}:log:r0"
    seeded.rpush(log, *[json.dumps({"type": "herder", "n": i}) for i in range(3)])

    def read(headers: dict[str, str], want: int) -> list[tuple[str, str, Any]]:
        got: list[tuple[str, str, Any]] = []
        kind = ident = ""
        with httpx.stream("GET", f"{srv.url}/api/jobs/r0/events?queue=web", headers=headers, timeout=30) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("data: "):
                    got.append((kind, ident, json.loads(line[6:])))
                    if len(got) == want:
                        return got
        return got

    with Server(settings, token=TOKEN) as srv:
        first = read(AUTH, 4)
        assert [k for k, _, _ in first] == ["snapshot", "log", "log", "log"]
        assert [i for _, i, _ in first] == ["0", "1", "2", "3"]
        # reconnect after event 2: a fresh snapshot, then only event 3
        again = read({**AUTH, "Last-Event-ID": "2"}, 2)
        assert [(k, i) for k, i, _ in again] == [("snapshot", "2"), ("log", "3")] and again[1][2]["n"] == 2
        assert httpx.get(f"{srv.url}/api/jobs/r0/events?queue=web").status_code == 401
        # a stream stays open and delivers what happens later (pushed, not reconnect-polled)
        with httpx.stream("GET", f"{srv.url}/api/jobs/r1/events?queue=web", headers=AUTH, timeout=30) as live:
            lines = live.iter_lines()
            assert next(line for line in lines if line.startswith("event: ")) == "event: snapshot"
            seeded.rpush("herder:{web}:log:r1", json.dumps({"type": "herder", "late": True}))
            assert next(line for line in lines if line.startswith("data: ")).startswith("data: {")
            late = next(line for line in lines if line.startswith("data: "))
            assert json.loads(late[6:]) == {"type": "herder", "late": True}
    with Server(settings, token=TOKEN, max_streams=1) as srv:
        # live streams are capped: while one is open, another is refused (429), not queued
        with httpx.stream("GET", f"{srv.url}/api/jobs/r0/events?queue=web", headers=AUTH, timeout=30) as held:
            next(held.iter_lines())  # the stream is open and counted
            with httpx.stream("GET", f"{srv.url}/api/jobs/r1/events?queue=web", headers=AUTH) as r:
                assert r.status_code == 429


def test_succeeded_and_cancelled_jobs_are_browsable(redis_server: RedisProc) -> None:
    from helpers import running_worker, wait_state
    from herder.client import HerderClient

    settings = HerderSettings(redis_url=redis_server.url, lease_seconds=2)

    async def seed() -> None:
        async with HerderClient(settings) as c:
            async with running_worker(settings, "web"):
                for i in range(3):
                    await c.enqueue("web", "echo", {"i": i}, id=f"ok{i}")
                for i in range(3):
                    await wait_state(c, f"ok{i}", "succeeded")
            await c.enqueue("web", "echo", {}, id="later", delay=3600)
            await c.enqueue("web", "echo", {}, id="again", delay=3600)

    asyncio.run(seed())
    with Server(settings, token=TOKEN) as srv:
        ok = httpx.get(f"{srv.url}/api/queues/web/jobs?state=succeeded", headers=AUTH).json()
        assert sorted(j["id"] for j in ok["items"]) == ["ok0", "ok1", "ok2"]
        assert all(j["state"] == "succeeded" and j["finished_at"] for j in ok["items"])
        for jid in ("later", "again"):
            assert (
                httpx.post(f"{srv.url}/api/jobs/{jid}/cancel?queue=web", headers=AUTH).json()["state"]
                == "cancelled"
            )
        c = httpx.get(f"{srv.url}/api/queues/web/jobs?state=cancelled", headers=AUTH).json()
        assert [j["id"] for j in c["items"]] == ["again", "later"] and c["counts"]["cancelled"] == 2
        # a cancelled job retried is listed where it now is, not under cancelled any more
        assert httpx.post(f"{srv.url}/api/jobs/again/retry?queue=web", headers=AUTH).status_code == 200
        c = httpx.get(f"{srv.url}/api/queues/web/jobs?state=cancelled", headers=AUTH).json()
        assert [j["id"] for j in c["items"]] == ["later"]
        # and bulk works on them too: remove every succeeded job
        r = httpx.post(
            f"{srv.url}/api/queues/web/jobs/bulk",
            json={"action": "remove", "state": "succeeded"},
            headers=AUTH,
        ).json()
        assert r["done"] == 3
        assert httpx.get(f"{srv.url}/api/queues/web/jobs?state=succeeded", headers=AUTH).json()["items"] == []


def test_bulk_by_filter_and_by_ids(seeded: redis.Redis, redis_server: RedisProc) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=TOKEN) as srv:
        r = httpx.post(
            f"{srv.url}/api/queues/web/jobs/bulk",
            json={"action": "cancel", "ids": ["r0", "nope"]},
            headers=AUTH,
        ).json()
        assert r["results"]["r0"] == "cancelled" and r["results"]["nope"].startswith("skipped")
        assert seeded.hget("herder:{web}:job:r0", "state") == "cancelled"
        r = httpx.post(
            f"{srv.url}/api/queues/web/jobs/bulk",
            json={"action": "remove", "state": "ready", "label": "team=a"},
            headers=AUTH,
        ).json()
        assert r["requested"] == 2 and r["done"] == 2 and not seeded.exists("herder:{web}:job:r1")
        r = httpx.post(f"{srv.url}/api/queues/web/jobs/bulk", json={"action": "retry"}, headers=AUTH)
        assert r.status_code == 400
        r = httpx.post(
            f"{srv.url}/api/queues/web/jobs/bulk", json={"action": "explode", "ids": []}, headers=AUTH
        )
        assert r.status_code == 422


# ---- in Chromium -----------------------------------------------------------------------------


def test_browse_queue_to_job_and_bulk_retry_from_dlq(
    seeded: redis.Redis, redis_server: RedisProc, browser: Any
) -> None:
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=TOKEN) as srv:
        page = _page_with_token(browser, srv.url)
        row = page.locator('#queues tr[data-queue="web"]')
        expect(row.locator("td.ready")).to_have_text("3")
        expect(row.locator("td.dead")).to_have_text("1")
        row.get_by_role("button", name="Pause").click()
        expect(row.locator("td.state")).to_have_text("paused")
        assert seeded.exists("herder:{web}:paused")
        row.get_by_role("link", name="web").click()
        page.locator('#jobs tr[data-job="r0"]').wait_for()
        # trends drawn by the vendored chart library from the sample in Redis
        expect(page.locator("#trend-samples")).to_have_text("1 samples")
        expect(page.locator("#trends canvas")).to_have_count(4)
        expect(page.locator(".pager")).not_to_contain_text("null")
        page.click('#state-tabs a[data-state="dead"]')
        dead = page.locator('#jobs tr[data-job="doomed"]')
        dead.wait_for()
        assert "broken on purpose" in (dead.text_content() or "")
        # deep link to the job page: its attempt timeline shows the error
        dead.get_by_role("link", name="doomed").click()
        expect(page.locator("#attempts")).to_contain_text("broken on purpose")
        # hostile text from an agent's log is shown as text, never run as markup
        expect(page.locator("#feed")).to_contain_text("<img src=x onerror=")
        assert page.locator("#feed img").count() == 0
        assert page.evaluate("window.__pwned === undefined")
        assert "#/job/web/doomed" in page.url
        page.go_back()
        page.locator('#jobs tr[data-job="doomed"]').wait_for()
        page.check('#jobs tr[data-job="doomed"] input[type=checkbox]')
        page.click("#bulk-retry")
        expect(page.locator('#jobs tr[data-job="doomed"]')).to_have_count(0)
        assert seeded.hget("herder:{web}:job:doomed", "state") == "ready"
        # a direct deep link to a missing job is reported, not rendered
        page.goto(f"{srv.url}/#/job/web/no-such-job")
        expect(page.locator("#job-error")).to_contain_text("no job")
        assert not [e for e in page.errors if "401" not in e and "404" not in e], page.errors


def test_cross_site_form_and_rebinding_are_refused_in_the_browser(
    seeded: redis.Redis, redis_server: RedisProc, playwright: Any, tmp_path: Path
) -> None:
    """A page on another origin posts a form at the dashboard (CSRF), and a rebinding host name
    points at it: both are refused by the server in real Chromium."""
    settings = HerderSettings(redis_url=redis_server.url)
    with Server(settings, token=TOKEN) as srv:
        evil = tmp_path / "evil"
        evil.mkdir()
        (evil / "index.html").write_text(
            f'<form method="post" action="{srv.url}/api/queues/web/pause">'
            '<button id="go">win a prize</button></form>'
        )
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(evil), **k)  # noqa: E731
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        b = _launch(playwright, "--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP evil.test 127.0.0.1")
        try:
            page = b.new_page()
            page.goto(f"http://evil.test:{httpd.server_address[1]}/")
            with page.expect_response(lambda r: "/pause" in r.url) as resp:
                page.click("#go")
            assert resp.value.status == 403
            assert not seeded.exists("herder:{web}:paused")
            r = page.goto(f"http://rebind.test:{srv.port}/api/queues")
            assert r is not None and r.status == 421
        finally:
            b.close()
            httpd.shutdown()
            httpd.server_close()


@pytest.fixture
def cc_env(cc_env: dict[str, str]) -> dict[str, str]:
    # Progress written often, so the page shows it within the run.
    return {**cc_env, "HERDER_CLAUDE_PROGRESS_INTERVAL_SECONDS": "0.2"}


@pytest.fixture
def held_claude_job(redis_server: RedisProc) -> str:
    """A claude_code job in a paused queue: held back until the page is open, so the feed must
    arrive live, not at load time. (Runs before Playwright owns the thread's event loop.)"""
    from herder.client import HerderClient

    async def enqueue() -> str:
        async with HerderClient(HerderSettings(redis_url=redis_server.url)) as c:
            await c.pause("default")
            r = await c.enqueue(
                "default",
                "claude_code",
                {"prompt": "Fix the bug. FAKE:turns=3 FAKE:sleep=2", "max_turns": 10},
            )
            return r.id

    return asyncio.run(enqueue())


def test_live_claude_run_updates_without_reload(
    held_claude_job: str, cc_env: dict[str, str], redis_server: RedisProc, browser: Any
) -> None:
    from procs import WorkerProc

    settings = HerderSettings(redis_url=redis_server.url)
    job_id = held_claude_job
    w = WorkerProc(cc_env, "cc-dash", concurrency=1, app=None)
    try:
        with Server(settings, token=TOKEN) as srv:
            page = _page_with_token(browser, srv.url)
            page.goto(f"{srv.url}/#/job/default/{job_id}")
            expect(page.locator("#job-state")).to_have_text("ready")
            page.evaluate("window.__notReloaded = true")
            assert page.locator("#feed .ev").count() == 0
            r = httpx.post(f"{srv.url}/api/queues/default/resume", headers=AUTH)
            assert r.status_code == 200
            expect(page.locator("#job-state")).to_have_text("active", timeout=60_000)
            expect(page.locator("#feed")).to_contain_text("tool ", timeout=60_000)
            expect(page.locator("#job-state")).to_have_text("succeeded", timeout=60_000)
            expect(page.locator("#result")).to_contain_text("total_cost_usd")
            claude = page.locator("#claude").text_content() or ""
            assert "claude-sonnet" in claude and "session id" in claude and "2.1." in claude
            assert page.evaluate("window.__notReloaded") is True
    finally:
        w.stop()


def test_dashboard_works_with_its_least_privilege_acl_roles(tmp_path: Path) -> None:
    """The dashboard under the generated `dashboard-read` / `dashboard-ops` ACL users: every page's
    API works; the read role cannot operate (403, nothing changed)."""
    import hashlib

    from helpers import running_worker, wait_state
    from herder.acl import acl_rule, aclfile_line
    from herder.client import HerderClient

    sha = hashlib.sha256(b"pw").hexdigest()
    lines = ["user default off", f"user admin on #{sha} ~* &* +@all"]
    for role in ("dashboard-read", "dashboard-ops"):
        lines.append(aclfile_line(acl_rule(role, [], user=role), sha))
    (tmp_path / "users.acl").write_text("\n".join(lines) + "\n")
    proc = RedisProc(tmp_path / "redis", extra=["--aclfile", str(tmp_path / "users.acl")]).start()
    try:

        def as_user(user: str) -> HerderSettings:
            return HerderSettings(
                redis_url=proc.url, redis_username=user, redis_password="pw", lease_seconds=2
            )

        async def seed() -> None:
            async with HerderClient(as_user("admin")) as c:
                async with running_worker(as_user("admin"), "web"):
                    await c.enqueue("web", "fail", {"message": "x"}, max_attempts=1, id="doomed")
                    await wait_state(c, "doomed", "dead")
                await c.enqueue("web", "echo", {}, id="child", after=["doomed"], run_regardless=True)
                await c.enqueue("web", "echo", {}, id="r0", labels={"team": "a"})
                await c.redis.rpush(c.keys("web").log("doomed"), json.dumps({"type": "herder"}))
                await trends.record(c.redis, c.keys("web"), lease_ms=2000)

        asyncio.run(seed())
        admin = redis.Redis(port=proc.port, username="admin", password="pw", decode_responses=True)
        reads = [
            "/api/queues",
            "/api/queues/web",
            "/api/queues/web/jobs?state=ready",
            "/api/queues/web/jobs?state=waiting",
            "/api/queues/web/jobs?state=dead&task=fail&label=team",
            "/api/queues/web/jobs?state=ready&label=team=a&worker=x&text=r",
            "/api/jobs/doomed?queue=web",
            "/api/jobs/doomed",
            "/api/jobs/doomed/graph?queue=web",
            "/api/jobs/doomed/raw/errors?queue=web",
            "/api/queues/web/trends",
            "/api/queues/web/cron",
        ]
        with Server(as_user("dashboard-read"), token=TOKEN) as srv:
            for path in reads:
                r = httpx.get(srv.url + path, headers=AUTH)
                assert r.status_code == 200, (path, r.text)
            with httpx.stream("GET", f"{srv.url}/api/jobs/doomed/events?queue=web", headers=AUTH) as r:
                kinds = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
            assert kinds == ["snapshot", "log", "end"]
            r = httpx.post(f"{srv.url}/api/queues/web/pause", headers=AUTH)
            assert r.status_code == 403 and "ACL" in r.json()["detail"]
            assert not admin.exists("herder:{web}:paused")
        with Server(as_user("dashboard-ops"), token=TOKEN) as srv:
            for path in reads:
                assert httpx.get(srv.url + path, headers=AUTH).status_code == 200, path
            assert httpx.post(f"{srv.url}/api/queues/web/pause", headers=AUTH).status_code == 200
            r = httpx.post(
                f"{srv.url}/api/queues/web/jobs/bulk", json={"action": "retry", "state": "dead"}, headers=AUTH
            )
            assert r.status_code == 200 and r.json()["results"] == {"doomed": "ready"}
            assert httpx.post(f"{srv.url}/api/queues/web/workers/nope/drain", headers=AUTH).status_code == 404
        admin.close()
    finally:
        proc.stop()
