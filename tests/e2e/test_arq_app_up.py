"""An unchanged arq app (WorkerSettings with functions, cron_jobs and on_startup; a producer
calling `await redis.enqueue_job(...)`) on Herder, autoscaled by `herder up`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from up_harness import Workers, herder_up, poll_until, tq_doc

from herder.arq import create_pool
from herder.arq.connections import RedisSettings
from herder.arq.jobs import JobStatus
from herder.client import HerderClient
from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(180)
APPS = str(Path(__file__).resolve().parent.parent / "apps")


async def test_arq_app_runs_on_herder_autoscaled_by_up(
    tmp_path: Path, redis_server: RedisProc, client: HerderClient, worker_env: dict[str, str]
) -> None:
    doc = tq_doc(
        "arqapp",
        queue="arq.queue",
        worker={"image": "herder:dev", "app": "arq_app:WorkerSettings", "concurrency": 3},
        maxReplicas=3,
    )
    path = tmp_path / "tq.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {**worker_env, "PYTHONPATH": os.pathsep.join(p for p in (APPS, worker_env.get("PYTHONPATH")) if p)}
    with herder_up(path, redis_server.url, env, tmp_path / "up.log") as up:
        redis = await create_pool(RedisSettings(host="127.0.0.1", port=redis_server.port))
        try:
            # The producer, unchanged apart from its import: arq's enqueue_job and Job handles.
            jobs = [await redis.enqueue_job("work", i) for i in range(18)]
            assert all(j is not None for j in jobs)
            workers = Workers(client, "arq.queue")
            await poll_until(workers, lambda n: n >= 2, 60)
            results = [await j.result(timeout=90, poll_delay=0.1) for j in jobs if j is not None]
            assert [r["n"] for r in results] == [i * 2 for i in range(18)]
            assert all(r["worker"].startswith("pid-") and r["try"] == 1 for r in results)  # on_startup ran
            assert len({r["worker"] for r in results}) >= 2  # spread over scaled-up workers
            assert all([await j.status() == JobStatus.complete for j in jobs if j is not None])
            # cron_jobs ran (run_at_startup, then every 30 s) through ctx['redis'] on Herder's queue.
            assert await redis.get("arq_app:cron_ran")
            assert workers.peak >= 2
        finally:
            await redis.close()
    out = up.output
    assert up.code == 0, out[-3000:]
    assert "Scaled" in out, out[-3000:]
