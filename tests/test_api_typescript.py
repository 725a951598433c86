"""examples/typescript end to end: types generated from `herder schema --openapi`, compiled with
tsc, run with node against a real `herder api`, redis-server and `herder worker` running the
fake Claude CLI. The client submits a claude_code run, drops its event stream once and resumes
with Last-Event-ID, and follows the run to its result.

npm installs once per test run into a temp copy of the example (npm's own cache makes later
runs offline-fast)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from herder.localredis import free_port
from procs import WorkerProc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "typescript"
CLI = [sys.executable, "-m", "herder.cli"]


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert p.returncode == 0, (
        f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    )
    return p.stdout


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI"):
            pytest.fail("npm not found; CI must have it (scripts/install-tools.sh)")
        pytest.skip("npm not found")
    work = tmp_path_factory.mktemp("ts") / "example"
    shutil.copytree(
        EXAMPLE, work, ignore=shutil.ignore_patterns("node_modules", "dist", "openapi.json", "schema.d.ts")
    )
    sh([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], work)
    openapi = sh([*CLI, "schema", "--openapi"], work)
    (work / "openapi.json").write_text(openapi)
    sh([npm, "run", "--silent", "generate"], work)
    return work


def test_a_payload_that_breaks_the_task_model_does_not_compile(example: Path) -> None:
    bad = example / "src" / "bad.ts"
    bad.write_text(
        'import type { components } from "./schema.js";\n'
        'export const s: components["schemas"]["SubmitClaudeCode"] = '
        '{ task: "claude_code", payload: { prompt: "x", max_turns: "ten" } };\n'
    )
    try:
        p = subprocess.run(
            ["npx", "--no-install", "tsc", "-p", ".", "--noEmit"],
            cwd=example,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        bad.unlink()
    assert p.returncode != 0 and "src/bad.ts(2," in p.stdout and "TS2322" in p.stdout, p.stdout


def test_typescript_client_submits_a_claude_run_and_streams_it_to_the_result(
    example: Path, cc_env: dict[str, str]
) -> None:
    sh(["npx", "--no-install", "tsc", "-p", "."], example)
    token = sh(
        [*CLI, "token", "create", "--queue", "default", "--can", "submit,read"], example, cc_env
    ).strip()
    port = free_port()
    api = subprocess.Popen(
        [*CLI, "api", "--port", str(port)], env=cc_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    worker = WorkerProc(cc_env, "ts-worker", concurrency=2, app=None)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert api.poll() is None, api.stderr.read() if api.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "herder api did not become ready"
            time.sleep(0.1)
        env = {**cc_env, "HERDER_API_URL": url, "HERDER_API_TOKEN": token, "HERDER_DROP_AFTER": "3"}
        out = sh(["node", "dist/submit.js", "Fix the bug. FAKE:turns=3"], example, env, timeout=120)
    finally:
        worker.stop()
        api.terminate()
        api.wait(15)
    lines = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert "submitted" in lines[0]
    events = [x for x in lines if "event" in x]
    final = lines[-1]
    assert final["final"] == "succeeded" and final["attempts"] == 1 and final["cost_usd"] > 0
    # two connections (dropped after 3 events): each starts with a snapshot
    assert [e["event"] for e in events].count("snapshot") == 2
    logs = [e for e in events if e["event"] == "log"]
    positions = [int(e["id"]) for e in logs]
    assert positions == list(range(1, len(logs) + 1))  # resumed without repeats or gaps
    types = {e["data"].get("type") for e in logs}
    assert {"system", "assistant", "result"} <= types  # the Claude run's own stream events
    assert events[-1]["event"] == "result" and events[-1]["data"]["result"]["is_error"] is False
