"""Against a real kind cluster (the kind-e2e workflow); skipped unless HERDER_KIND=1.

Installs the chart and an in-cluster Redis, applies a TaskQueue, enqueues a burst of `sleep`
tasks through a port-forward, and checks that the worker Deployment scales up, every task
succeeds on its first attempt, and replicas come back to the minimum."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herder.client import HerderClient, JobRequest
from herder.settings import HerderSettings

pytestmark = pytest.mark.skipif(
    os.environ.get("HERDER_KIND") != "1", reason="needs a kind cluster (HERDER_KIND=1)"
)
ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("HERDER_KIND_IMAGE", "herder:e2e")
NS = "herder-e2e"


def kubectl(*args: str, check: bool = True) -> str:
    return subprocess.run(["kubectl", *args], check=check, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    assert shutil.which("kubectl") and shutil.which("helm"), "kubectl and helm are needed"
    repo, tag = IMAGE.split(":")
    subprocess.run(
        [
            "helm",
            "upgrade",
            "--install",
            "herder",
            str(ROOT / "charts/herder"),
            "--namespace",
            NS,
            "--create-namespace",
            "--set",
            f"image.repository={repo}",
            "--set",
            f"image.tag={tag}",
            "--wait",
            "--timeout",
            "5m",
        ],
        check=True,
        timeout=400,
    )
    kubectl("-n", NS, "create", "deployment", "redis", "--image=redis:7", "--port=6379")
    kubectl("-n", NS, "expose", "deployment", "redis", "--port=6379")
    kubectl("-n", NS, "rollout", "status", "deployment/redis", "--timeout=180s")
    tq = {
        "apiVersion": "herder.dev/v1alpha1",
        "kind": "TaskQueue",
        "metadata": {"name": "e2e", "namespace": NS},
        "spec": {
            "queue": "e2e",
            "redis": {"url": "redis://redis:6379/0"},
            "worker": {"image": IMAGE, "concurrency": 5},
            "minReplicas": 0,
            "maxReplicas": 4,
            "scaleDown": {"stabilizationSeconds": 10, "cooldownSeconds": 20},
            "pollIntervalSeconds": 2,
            "drainTimeoutSeconds": 60,
        },
    }
    subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(tq), text=True, check=True, timeout=60)
    pf = subprocess.Popen(
        ["kubectl", "-n", NS, "port-forward", "svc/redis", "16379:6379"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    try:
        yield
    finally:
        pf.terminate()
        pf.wait(10)


def deployment_replicas() -> int:
    out = kubectl(
        "-n", NS, "get", "deployment", "e2e-workers", "-o", "jsonpath={.spec.replicas}", check=False
    )
    return int(out or 0)


def test_burst_scales_up_and_back_down(cluster: None) -> None:
    async def run() -> None:
        async with HerderClient(HerderSettings(redis_url="redis://127.0.0.1:16379/0")) as c:
            reqs = [JobRequest(task="sleep", payload={"seconds": 20}, id=f"k{i}") for i in range(40)]
            await c.enqueue_many("e2e", reqs)
            seen = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                seen = max(seen, deployment_replicas())
                st = await c.status("e2e")
                if st.ready + st.active == 0 and st.counters.get("succeeded", 0) == 40:
                    break
                await asyncio.sleep(2)
            assert seen >= 2
            for i in range(40):
                j = await c.get_job(f"k{i}", "e2e")
                assert j.state == "succeeded" and j.attempts == 1
            while time.monotonic() < deadline:
                if deployment_replicas() == 0:
                    return
                await asyncio.sleep(2)
            raise AssertionError("replicas did not return to 0")

    asyncio.run(run())
