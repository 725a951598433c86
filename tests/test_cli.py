"""The CLI contract, run as a real subprocess against a real Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis

CLI = [sys.executable, "-m", "herder.cli"]


def herder(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_enqueue_job_status_and_exit_codes(worker_env: dict[str, str], redis_server: object) -> None:
    r = herder(worker_env, "enqueue", "default", "echo", "--payload", '{"x": 1}', "--priority", "3", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["id"]
    j = json.loads(herder(worker_env, "job", job_id, "--json").stdout)
    for field in (
        "id",
        "queue",
        "task",
        "state",
        "priority",
        "attempts",
        "enqueued_at",
        "started_at",
        "finished_at",
        "result",
        "errors",
    ):
        assert field in j
    assert j["state"] == "ready" and j["priority"] == 3 and isinstance(j["enqueued_at"], float)
    st = json.loads(herder(worker_env, "status", "default", "--json").stdout)
    for field in ("ready", "scheduled", "waiting", "active", "dead", "paused", "workers"):
        assert field in st
    assert st["ready"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "default", "sleep", "--payload", '{"seconds": "x"}'],
        ["enqueue", "default", "sleep", "--payload", "{not json"],
        ["enqueue", "default", "nope"],
        ["enqueue", "default", "echo", "--after", "ghost"],
        ["enqueue", "default", "echo", "--delay", "1", "--at", "2030-01-01T00:00:00Z"],
        ["enqueue", "default", "echo", "--at", "2030-01-01T00:00:00"],
        ["enqueue", "bad{queue}", "echo"],
        ["enqueue", "default", "echo", "--priority", "99999"],
        ["worker", "default", "--app", "no.such.module"],
    ],
)
def test_invalid_input_exits_2_with_one_line_and_writes_nothing(
    worker_env: dict[str, str], redis_server: object, args: list[str]
) -> None:
    r = herder(worker_env, *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() and len(r.stderr.strip().splitlines()) == 1, r.stderr
    port = int(worker_env["HERDER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    assert redis.Redis(port=port).dbsize() == 0


def test_unknown_job_exits_1(worker_env: dict[str, str], redis_server: object) -> None:
    r = herder(worker_env, "job", "nope", "--json")
    assert r.returncode == 1 and "no job" in r.stderr


def test_unreachable_redis_exits_1(worker_env: dict[str, str]) -> None:
    env = dict(worker_env, HERDER_REDIS_URL="redis://127.0.0.1:1/0")
    r = herder(env, "status", "default", "--json")
    assert r.returncode == 1 and r.stderr.startswith("herder:")


@pytest.mark.timeout(400)  # generous condition waits: each CLI call is slow on a loaded machine
def test_worker_runs_demo_tasks_and_operations(worker_env: dict[str, str], redis_server: object) -> None:
    ids = {}
    for name, task, payload in [
        ("e", "echo", '{"hi": 1}'),
        ("f", "fail", "{}"),
        ("k", "flaky", '{"failures": 1}'),
    ]:
        ids[name] = herder(
            worker_env, "enqueue", "default", task, "--payload", payload, "--id", name
        ).stdout.strip()
    w = subprocess.Popen(
        [*CLI, "worker", "default", "--concurrency", "4", "--name", "cli-w"],
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = {
                n: json.loads(herder(worker_env, "job", i, "--json").stdout)["state"] for n, i in ids.items()
            }
            if states == {"e": "succeeded", "f": "dead", "k": "succeeded"}:
                break
            time.sleep(0.2)
        assert states == {"e": "succeeded", "f": "dead", "k": "succeeded"}
        st = json.loads(herder(worker_env, "status", "default", "--json").stdout)
        assert [(x["id"], x["capacity"]) for x in st["workers"]] == [("cli-w", 4)]
        assert {"in_flight", "draining", "last_seen"} <= set(st["workers"][0])
        listed = json.loads(herder(worker_env, "dlq", "list", "default", "--json").stdout)
        assert [x["id"] for x in listed] == ["f"] and len(listed[0]["errors"]) == 3
        assert herder(worker_env, "pause", "default").returncode == 0
        assert json.loads(herder(worker_env, "status", "default", "--json").stdout)["paused"] is True
        assert herder(worker_env, "resume", "default").returncode == 0
        assert herder(worker_env, "retry", "f").returncode == 0
        assert herder(worker_env, "dlq", "replay", "default").returncode == 2  # neither ids nor --all
        r = herder(worker_env, "enqueue", "default", "sleep", "--payload", '{"seconds": 60}', "--id", "long")
        assert r.returncode == 0
        deadline = time.monotonic() + 60
        while json.loads(herder(worker_env, "job", "long", "--json").stdout)["state"] != "active":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert herder(worker_env, "cancel", "long").stdout.strip() == "long cancelling"
        deadline = time.monotonic() + 60
        while json.loads(herder(worker_env, "job", "long", "--json").stdout)["state"] != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert herder(worker_env, "remove", "long").returncode == 0
        deadline = time.monotonic() + 90
        while json.loads(herder(worker_env, "job", "f", "--json").stdout)["state"] != "dead":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert herder(worker_env, "dlq", "purge", "default").stdout.strip() == "purged 1"
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0
