"""Herder's Lua interface on a real Redis Cluster (3 masters): every script of a queue runs in
that queue's slot (no CROSSSLOT, no non-local key), and queues spread over the masters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from cluster_proc import RedisClusterProc
from herder.keys import QueueKeys
from herder.request import JobRequest
from herder.scripts import Scripts
from herder.tasks import load_taskset
from herder.wire import encode_job


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProc]:
    c = RedisClusterProc(Path(tmp_path_factory.mktemp("cluster")), masters=3).start()
    try:
        yield c
    finally:
        c.stop()


async def test_queues_spread_over_masters_and_every_script_stays_in_its_slot(
    cluster: RedisClusterProc,
) -> None:
    rc = RedisCluster(host="127.0.0.1", port=cluster.ports[0], decode_responses=True)
    try:
        await rc.initialize()
        queues = [f"q{i}" for i in range(12)]
        owners = {q: rc.get_node_from_key(QueueKeys("herder", q).ready).name for q in queues}
        assert len(set(owners.values())) == 3, owners  # the hash tag spreads queues over masters
        scripts = Scripts.register(rc)
        echo = load_taskset(None).get("echo")
        picked = {}
        for q, node in owners.items():  # one queue per master
            picked.setdefault(node, q)
        for q in picked.values():
            keys = QueueKeys("herder", q)
            specs = [
                encode_job(q, JobRequest(task="echo", payload={"i": i}, id=f"j{i}"), echo) for i in range(3)
            ]
            rows = await scripts.enqueue(keys, json.dumps(specs))
            assert [r[1] for r in rows] == ["ready"] * 3
            hb = json.dumps({"fields": {"capacity": 2}, "jobs": []})
            claim = await scripts.claim(keys, "w1", 2, 10_000, "[]", hb, "1")
            (a, _t, _p, tok_a, *_), (b, _t2, _p2, tok_b, *_) = claim[0]
            assert await scripts.progress(keys, a, str(tok_a), "w1", '{"pct": 50}') == 1
            out = await scripts.finish(keys, "w1", "60000", a, str(tok_a), "ok", "1", "0", "",
                                       b, str(tok_b), "dead", "{}", "0", "boom")  # fmt: skip
            assert out == ["succeeded", "dead"]
            assert [r[0] for r in await scripts.replay(keys, b)] == ["ok"]
            assert (await scripts.cancel(keys, b))[0] == "cancelled"
            assert (await scripts.remove(keys, b))[0] == "removed"
            assert await scripts.drain(keys, "w1", "1", "0") == 1
            await rc.set(keys.paused, "1")
            assert await scripts.resume(keys) == 1
            status = await scripts.status(keys, 10_000)  # EVALSHA_RO, routed by its keys
            assert int(status[1]) == 1 and len(status[7]) == 1  # j2 ready; worker w1 registered
            assert await rc.hget(keys.job(a), "state") == "succeeded"
    finally:
        await rc.aclose()
