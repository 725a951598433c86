"""`claude_code` end to end through the queue: the `herder` CLI enqueues, a real `herder worker`
process runs the fake `claude` CLI, and the job shows progress while running and the cost and
result after."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import redis

from procs import WorkerProc

CLI = [sys.executable, "-m", "herder.cli"]


def herder(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def job(env: dict[str, str], job_id: str) -> dict[str, object]:
    r = herder(env, "job", job_id, "--json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def wait_job(env: dict[str, str], job_id: str, states: set[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        j = job(env, job_id)
        if j["state"] in states:
            return j
        assert time.monotonic() < deadline, f"job stayed {j['state']}"
        time.sleep(0.2)


def test_claude_code_runs_end_to_end_with_progress_and_cost(cc_env: dict[str, str]) -> None:
    w = WorkerProc(cc_env, "cc-worker", concurrency=2, app=None)
    try:
        # A 10 s pause mid-run: each `herder job` poll starts a Python process, which takes seconds
        # on a loaded machine; a short pause let the run finish between two polls.
        payload = json.dumps({"prompt": "Fix the bug. FAKE:turns=3 FAKE:sleep=10", "max_turns": 10})
        r = herder(cc_env, "enqueue", "default", "claude_code", "--payload", payload)
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.strip()
        # while it runs, its progress is visible
        deadline = time.monotonic() + 30
        while True:
            j = job(cc_env, job_id)
            progress = j.get("progress")
            if j["state"] == "active" and isinstance(progress, dict) and progress.get("turns", 0) >= 1:
                break
            assert j["state"] in ("ready", "active"), j
            assert time.monotonic() < deadline, f"no progress seen: {j}"
            time.sleep(0.1)
        follow = herder(cc_env, "job", job_id, "--follow", "--json")
        assert follow.returncode == 0, follow.stderr
        final = json.loads(follow.stdout.strip().splitlines()[-1])
        assert final["state"] == "succeeded" and final["attempts"] == 1
        result = final["result"]
        assert isinstance(result, dict)
        for key in (
            "result",
            "is_error",
            "subtype",
            "num_turns",
            "duration_ms",
            "total_cost_usd",
            "usage",
            "session_id",
        ):
            assert key in result, key
        assert result["is_error"] is False and result["total_cost_usd"] > 0 and result["num_turns"] >= 3
    finally:
        w.stop()


def test_claude_code_failure_classes_through_the_queue(cc_env: dict[str, str]) -> None:
    w = WorkerProc(cc_env, "cc-fail", concurrency=3, app=None)
    try:
        ids = {}
        for name, prompt in [("auth", "FAKE:auth"), ("limit", "FAKE:rate_limit"), ("crash", "FAKE:crash")]:
            r = herder(
                cc_env,
                "enqueue",
                "default",
                "claude_code",
                "--payload",
                json.dumps({"prompt": prompt}),
                "--max-attempts",
                "2",
                "--id",
                f"cc-{name}",
            )
            assert r.returncode == 0, r.stderr
            ids[name] = r.stdout.strip()
        auth = wait_job(cc_env, ids["auth"], {"dead"})
        assert auth["attempts"] == 1  # permanent: no retry
        for name in ("limit", "crash"):
            j = wait_job(cc_env, ids[name], {"dead"}, timeout=90)
            assert j["attempts"] == 2, (name, j)  # transient / crash: retried with backoff
    finally:
        w.stop()


def test_invalid_claude_code_payload_is_rejected_and_nothing_written(
    cc_env: dict[str, str], redis_server: object
) -> None:
    bad_payloads = [
        {"prompt": "hi", "unknown_field": 1},
        {"prompt": "nul\u0000byte"},
        {"prompt": "x", "workspace": {"kind": "path", "path": "../../etc"}},
    ]
    for p in bad_payloads:
        r = herder(cc_env, "enqueue", "default", "claude_code", "--payload", json.dumps(p))
        assert r.returncode == 2, (p, r.stderr)
        assert "claude_code" in r.stderr
    # an oversize prompt does not fit in argv: send it as a JSON line on stdin
    line = json.dumps({"task": "claude_code", "payload": {"prompt": "x" * (2 * 1024 * 1024)}})
    r = subprocess.run(
        [*CLI, "enqueue-many", "default", "-f", "-"],
        env=cc_env,
        input=line,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "claude_code" in r.stderr, r.stderr
    port = int(cc_env["HERDER_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    assert redis.Redis(port=port).dbsize() == 0
