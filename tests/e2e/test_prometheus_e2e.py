"""The monitoring path, end to end, on a real Prometheus server (Debian's, from .tools/bin).

Real redis-server, the real operator (kopf on kmock, fake kubelet) serving HERDER_METRICS_PORT,
real `herder worker` processes with their metrics ports, and Prometheus scraping them like the
chart's ServiceMonitor (operator) and PodMonitor (workers) would, with the chart's alert rules
(files/alerts.yaml, only `for:` shortened). Each alert condition that can be caused here is
caused, and the alert must reach `firing` in Prometheus's HTTP API; every query of the shipped
Grafana dashboard must return series.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from operator_harness import Cluster, tq_spec, until

from herder.client import HerderClient
from herder.settings import HerderSettings
from procs import stop_process
from redis_proc import RedisProc, free_port
from toolbins import find_binary

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "charts" / "herder" / "files" / "alerts.yaml"
DASHBOARD = ROOT / "charts" / "herder" / "files" / "dashboard.json"
APPS = str(ROOT / "tests" / "apps")
FOR = "2s"
T = TypeVar("T")


def arun(fn: Callable[[HerderClient], Awaitable[T]], url: str) -> T:
    """A client that knows the test app's tasks (work, blocker) as well as the built-in ones."""
    sys.path.insert(0, APPS) if APPS not in sys.path else None
    from chaos_app import tasks

    async def main() -> T:
        # Not 0.5 s: under load a local connect can take longer, and a probe error fails the test.
        async with HerderClient(HerderSettings(redis_url=url, redis_connect_timeout=5.0), tasks) as c:
            return await fn(c)

    return asyncio.run(main())  # every alert's `for:`, shortened; expressions and windows are the chart's


class Prometheus:
    def __init__(self, binary: str, workdir: Path, operator_port: int, worker_ports: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = yaml.safe_load(ALERTS.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = FOR
        (workdir / "alerts.yaml").write_text(yaml.safe_dump(rules))
        # What the Prometheus Operator generates from the chart's monitors, as far as labels go:
        # the ServiceMonitor's job/namespace/service, the PodMonitor's namespace/pod.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(workdir / "alerts.yaml")],
            "scrape_configs": [
                {
                    "job_name": "serviceMonitor/herder-system/herder-operator/0",
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{operator_port}"],
                            "labels": {
                                "job": "herder-metrics",
                                "namespace": "herder-system",
                                "service": "herder-metrics",
                            },
                        }
                    ],
                },
                {
                    "job_name": "podMonitor/herder-system/herder-workers/0",
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{port}"],
                            "labels": {
                                "job": "herder-system/herder-workers",
                                "namespace": "default",
                                "pod": pod,
                            },
                        }
                        for pod, port in worker_ports.items()
                    ],
                },
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        until(self._ready, bool, 60, "Prometheus ready")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def firing(self) -> set[str]:
        data = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()
        return {a["labels"]["alertname"] for a in data["data"]["alerts"] if a["state"] == "firing"}

    def query(self, expr: str) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(
            f"{self.url}/api/v1/query", params={"query": expr}, timeout=5
        ).json()
        return result

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.log.close()


class Worker:
    """`herder worker` with its metrics port, as a worker pod runs it."""

    def __init__(self, env: dict[str, str], name: str, queue: str, port: int, log: Path) -> None:
        env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (APPS, env.get("PYTHONPATH", "")) if p)}
        cmd = [sys.executable, "-m", "herder.cli", "worker", queue, "--concurrency", "2", "--name", name]
        cmd += ["--app", "chaos_app", "--metrics-port", str(port), "--drain-timeout", "5"]
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.log.close()


@pytest.fixture
def operator_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv("HERDER_METRICS_PORT", str(port))
    return port


@pytest.fixture
def prometheus_binary() -> str:
    binary = find_binary("prometheus", "HERDER_PROMETHEUS")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus not found; CI must have it (scripts/install-tools.sh)")
        pytest.skip("prometheus not found (scripts/install-tools.sh)")
    return binary


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"].replace("$__rate_interval", "1m").replace("$queue", ".*"))
        for p in dash["panels"]
        for t in p.get("targets", [])
    ]


def test_alerts_fire_on_a_real_prometheus(
    operator_port: int,
    cluster: Cluster,
    redis_server: RedisProc,
    worker_env: dict[str, str],
    prometheus_binary: str,
    tmp_path: Path,
) -> None:
    url = redis_server.url
    ports = {"w1": free_port(), "w2": free_port()}
    workers: dict[str, Worker] = {}
    prom = Prometheus(prometheus_binary, tmp_path, operator_port, ports)
    stop_feeding = threading.Event()
    feeder: threading.Thread | None = None
    try:
        workers["w1"] = Worker(worker_env, "w1", "jobs", ports["w1"], tmp_path / "w1.log")
        # The queue our own workers serve: a TaskQueue so the operator exports its queue metrics;
        # paused (spec) so that it does not start workers of its own.
        cluster.create_tq("jobs", tq_spec(url, queue="jobs", minReplicas=0, paused=True))
        # The worker's counters are there at 0 before anything happens (increase() needs that).
        until(
            lambda: prom.query('herder_event_loop_blocked_total{pod="w1"}')["data"]["result"],
            bool,
            60,
            "w1 scraped",
        )
        # Backlog with no workers: the operator holds this one at 0 (spec.paused), jobs wait.
        cluster.create_tq("held", tq_spec(url, queue="held", minReplicas=0, paused=True))
        # Scaling stuck at max: one worker slot, a backlog that keeps growing.
        stuck = {"image": "herder:dev", "concurrency": 1}
        cluster.create_tq("stuck", tq_spec(url, queue="stuck", minReplicas=1, maxReplicas=1, worker=stuck))
        until(lambda: cluster.replicas("stuck"), lambda n: n == 1, 60, "stuck TaskQueue at its one replica")

        async def enqueue(c: HerderClient) -> None:
            await c.enqueue("held", "sleep", {"seconds": 0.1})
            for _ in range(3):
                await c.enqueue("jobs", "fail", {})  # -> dead-letter queue
            await c.enqueue("jobs", "work", {"seconds": 0.05})
            await c.enqueue("jobs", "blocker", {"seconds": 1.5})  # blocks w1's event loop

        arun(enqueue, url)

        def feed() -> None:
            while not stop_feeding.is_set():
                arun(lambda c: c.enqueue("stuck", "sleep", {"seconds": 30}), url)
                stop_feeding.wait(0.3)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()

        expected = {
            "HerderQueueBacklogNoWorkers",
            "HerderDeadLetterGrowing",
            "HerderEventLoopBlocked",
            "HerderQueueBacklogGrowing",
            "HerderTaskQueueAtMaxReplicas",
        }
        until(prom.firing, lambda f: expected <= f, 90, f"{sorted(expected)} firing")

        # A worker gone mid-job: its lease expires and the job is taken over.
        arun(lambda c: c.enqueue("jobs", "work", {"seconds": 0.05, "first_attempt_seconds": 60}), url)
        until(
            lambda: arun(lambda c: c.status("jobs"), url),
            lambda s: s.active >= 1,
            30,
            "the long job running on w1",
        )
        workers.pop("w1").stop(signal.SIGKILL)
        workers["w2"] = Worker(worker_env, "w2", "jobs", ports["w2"], tmp_path / "w2.log")
        until(prom.firing, lambda f: "HerderLeaseExpiries" in f, 90, "HerderLeaseExpiries firing")

        # Every dashboard query parses and returns series while everything is up (waited for:
        # the replacement worker's series appear only once Prometheus has scraped it).
        def empty_queries() -> list[tuple[str, str]]:
            empty = []
            for title, expr in dashboard_queries():
                answer = prom.query(expr)
                assert answer["status"] == "success", (title, expr, answer)
                if not answer["data"]["result"]:
                    empty.append((title, expr))
            return empty

        until(empty_queries, lambda e: not e, 60, "every dashboard query returning series")

        # A queue paused (in Redis) for longer than `for:`.
        arun(lambda c: c.pause("jobs"), url)
        until(prom.firing, lambda f: "HerderQueuePaused" in f, 60, "HerderQueuePaused firing")

        # Redis down: the operator's collector and the worker both report it.
        stop_feeding.set()
        feeder.join(10)
        redis_server.stop()
        until(prom.firing, lambda f: "HerderRedisDown" in f, 90, "HerderRedisDown firing")
    finally:
        stop_feeding.set()
        if feeder is not None:
            feeder.join(10)
        for w in workers.values():
            w.stop()
        prom.stop()


def test_dashboard_queries_need_no_grafana_only_functions() -> None:
    """The substitution above covers every Grafana variable the dashboard uses."""
    for title, expr in dashboard_queries():
        assert "$" not in expr, (title, expr)
