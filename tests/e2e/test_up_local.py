"""`herder up` and the local pool end to end: real redis-server, real `herder worker` processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from up_harness import Workers, herder_up, poll_until, tq_doc

from herder.client import HerderClient
from herder.models import JobState
from herder.settings import HerderSettings
from herder_operator.pools.local import LocalPool
from herder_operator.reconciler import Reconciler, status_of
from herder_operator.spec import TaskQueueSpec
from redis_proc import RedisProc

pytestmark = pytest.mark.timeout(180)


async def test_herder_up_scales_a_burst_up_and_back_to_zero(
    tmp_path: Path, redis_server: RedisProc, client: HerderClient, worker_env: dict[str, str]
) -> None:
    path = tmp_path / "tq.yaml"
    path.write_text(yaml.safe_dump(tq_doc()))
    with herder_up(path, redis_server.url, worker_env, tmp_path / "up.log") as up:
        ids = [(await client.enqueue("default", "sleep", {"seconds": 1.0})).id for _ in range(40)]
        workers = Workers(client, "default")
        await poll_until(workers, lambda n: n == 4, 60)
        await poll_until(
            lambda: asyncio.gather(*(client.get_job(i, "default") for i in ids)),
            lambda jobs: all(j.state == JobState.succeeded for j in jobs),
            90,
        )
        jobs = [await client.get_job(i, "default") for i in ids]
        assert all(j.attempts == 1 and not j.errors for j in jobs), [j.errors for j in jobs if j.errors]
        await poll_until(workers, lambda n: n == 0, 60)
        assert workers.peak == 4
    out = up.output
    assert up.code == 0, out[-3000:]
    assert "Scaled" in out and "Draining" in out, out[-3000:]


async def test_redis_outage_keeps_local_workers(
    tmp_path: Path, redis_server: RedisProc, worker_env: dict[str, str]
) -> None:
    spec = TaskQueueSpec.model_validate(tq_doc(minReplicas=0, maxReplicas=3)["spec"])
    pool = LocalPool("outage", spec, redis_server.url, env=worker_env, replicas=2)
    settings = HerderSettings(redis_url=redis_server.url, redis_connect_timeout=0.5)
    try:
        async with HerderClient(settings) as c:
            rec = Reconciler(spec, pool, c)
            await pool.scale_to(2)
            await poll_until(lambda: c.status("default"), lambda s: len(s.workers) == 2, 30)
            redis_server.stop()
            report = await rec.step()
            assert report.status is None and report.error
            assert report.new_replicas == 2 and len(await pool.members()) == 2
            st = status_of(report, rec)
            cond = {x.type: x for x in st.conditions}
            assert cond["RedisReachable"].status == "False"
            assert cond["Degraded"].status == "True"
            # Idle queue and no data: still nothing removed on later steps.
            report = await rec.step(report.at + 600)
            assert report.new_replicas == 2 and not report.decision.drain
    finally:
        await asyncio.to_thread(pool.close, 15)


def test_up_rejects_an_invalid_taskqueue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from herder_operator.up import run_up

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tq_doc(minReplicas=5, maxReplicas=2)))
    assert run_up(str(path), "redis://127.0.0.1:1/0") == 2
    assert "minReplicas" in capsys.readouterr().out


def test_up_needs_no_spec_redis_and_names_fields_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from herder_operator.up import load_local, run_up

    doc = tq_doc()
    doc["spec"].pop("redis", None)
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(doc))
    tq, has_redis = load_local(path)  # refused before: "spec.spec.redis: Field required"
    assert tq.spec.queue == doc["spec"]["queue"] and not has_redis
    doc["spec"]["minReplicas"] = "many"
    path.write_text(yaml.safe_dump(doc))
    assert run_up(str(path), "redis://127.0.0.1:1/0") == 2
    out = capsys.readouterr().out
    assert "spec.minReplicas" in out and "spec.spec" not in out
