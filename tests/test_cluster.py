"""Herder on a real Redis Cluster (3 masters with a replica each): every script of a queue runs in
that queue's slot (no CROSSSLOT, no non-local key), queues spread over the masters, and
HERDER_REDIS_CLUSTER=true makes clients and `herder worker` processes use the cluster client."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from cluster_proc import RedisClusterProc
from failover import one_queue_per_master
from helpers import running_worker, wait_state
from herder.client import HerderClient
from herder.connection import redis_client
from herder.errors import InvalidInput
from herder.keys import QueueKeys
from herder.request import JobRequest
from herder.scripts import Scripts
from herder.settings import HerderSettings
from herder.tasks import JobContext, TaskSet, load_taskset
from herder.wire import encode_job
from procs import WorkerProc, chaos_tasks


@pytest.fixture
def cluster(redis_cluster: RedisClusterProc) -> RedisClusterProc:
    redis_cluster.flushall()
    return redis_cluster


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
            out = await scripts.finish(keys, "w1", "60000", "10000", a, str(tok_a), "ok", "1", "0", "",
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


# ---- HERDER_REDIS_CLUSTER -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"HERDER_REDIS_SENTINELS": "127.0.0.1:26379"}, "exclude each other"),
        ({"HERDER_REDIS_URL": "redis://127.0.0.1:7000/2"}, "only database 0"),
        ({"HERDER_REDIS_URL": "unix:///tmp/redis.sock"}, "redis:// or rediss://"),
    ],
)
def test_cluster_setting_refuses_what_a_cluster_cannot_be(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    monkeypatch.setenv("HERDER_REDIS_CLUSTER", "true")
    monkeypatch.setenv("HERDER_REDIS_URL", "redis://127.0.0.1:7000/0")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=error):
        HerderSettings()


def test_cluster_client_keeps_auth_tls_and_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDER_REDIS_CLUSTER", "true")
    monkeypatch.setenv("HERDER_REDIS_URL", "redis://node-a:7000/0")
    monkeypatch.setenv("HERDER_REDIS_USERNAME", "u")
    monkeypatch.setenv("HERDER_REDIS_PASSWORD", "p")
    monkeypatch.setenv("HERDER_REDIS_TLS", "true")
    monkeypatch.setenv("HERDER_REDIS_CONNECT_TIMEOUT", "3.5")
    r = redis_client(HerderSettings())
    assert isinstance(r, RedisCluster)
    kw = r.get_connection_kwargs()
    assert (kw["username"], kw["password"], kw["socket_connect_timeout"]) == ("u", "p", 3.5)
    assert kw["decode_responses"] and kw["socket_timeout"] and kw["socket_keepalive"]
    assert (
        kw["connection_class"].__name__ == "FastSSLConnection"
    )  # hiredis packing over redis-py's TLS connection
    startup = r.nodes_manager.startup_nodes.values()
    assert [(n.host, n.port) for n in startup] == [("node-a", 7000)]  # learns the rest from it


async def test_workers_serve_queues_on_every_master(cluster: RedisClusterProc, tmp_path: Any) -> None:
    """Real `herder worker` processes with HERDER_REDIS_CLUSTER=true, one per queue, the queues
    on three different masters: every job succeeds (its task uses ctx['redis'] too), and each
    worker leaves the registry when stopped."""
    env = dict(os.environ)
    env.update(HERDER_REDIS_URL=cluster.url, HERDER_REDIS_CLUSTER="true", HERDER_LEASE_SECONDS="2")
    env.pop("HERDER_APP", None)
    queues = one_queue_per_master(cluster)
    settings = HerderSettings(redis_url=cluster.url, redis_cluster=True)
    workers = [WorkerProc(env, f"w-{q}", queue=q, log=tmp_path / f"{q}.log") for q in queues]
    try:
        async with HerderClient(settings, chaos_tasks()) as c:
            ids = {q: [(await c.enqueue(q, "work", {"seconds": 0.01})).id for _ in range(10)] for q in queues}
            for jobs in ids.values():
                for jid in jobs:
                    await wait_state(c, jid, "succeeded", timeout=60)
                    assert await c.redis.get(f"test:exec:{jid}") == "1"  # ctx['redis'] on the cluster
            for w in workers:
                w.signal(signal.SIGTERM)
            assert [w.wait(60) for w in workers] == [0] * len(workers)
            for q in queues:
                assert await c.redis.zcard(c.keys(q).workers) == 0  # left the registry
                assert not await c.redis.exists(c.keys(q).worker(f"w-{q}"))
            assert sorted(await c.queues()) == sorted(queues)  # the index: one key, one slot
    finally:
        for w in workers:
            w.stop()


async def test_a_task_enqueues_through_ctx_redis_on_the_cluster(cluster: RedisClusterProc) -> None:
    """ctx['redis'] of a worker on a cluster offers arq's enqueue_job (onto Herder's queue)."""
    app = TaskSet(load_taskset(None))

    @app.task()
    async def chain(ctx: JobContext, p: Any) -> str:
        job = await ctx.state["redis"].enqueue_job("echo", _job_id="chained")
        return str(job.job_id)

    settings = HerderSettings(redis_url=cluster.url, redis_cluster=True, lease_seconds=2.0)
    async with HerderClient(settings, app) as c, running_worker(settings, "default", tasks=app):
        first = await c.enqueue("default", "chain")
        assert (await wait_state(c, first.id, "succeeded")).result == "chained"
        await wait_state(c, "chained", "succeeded")


async def test_arq_single_node_clients_refuse_a_cluster(
    cluster: RedisClusterProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """herder.arq's ArqRedis and Worker are single-node clients (arq's API): on a cluster they
    refuse with a clear error instead of writing keys outside any queue's slot."""
    from herder.arq import Worker, create_pool
    from herder.arq.connections import RedisSettings

    monkeypatch.setenv("HERDER_REDIS_CLUSTER", "true")
    monkeypatch.setenv("HERDER_REDIS_URL", cluster.url)
    with pytest.raises(InvalidInput, match="Redis Cluster"):
        await create_pool(RedisSettings(port=cluster.ports[0]))
    with pytest.raises(InvalidInput, match="Redis Cluster"):
        Worker(functions=[arq_job], redis_settings=RedisSettings(port=cluster.ports[0]))
    assert await cluster_keys(cluster) == 0


async def arq_job(ctx: Any) -> None:
    return None


async def cluster_keys(cluster: RedisClusterProc) -> int:
    rc = RedisCluster.from_url(cluster.url)
    try:
        return int(await rc.dbsize(target_nodes=RedisCluster.PRIMARIES))
    finally:
        await rc.aclose()


def test_http_api_on_the_cluster(cluster: RedisClusterProc, tmp_path: Any) -> None:
    """The HTTP API with HERDER_REDIS_CLUSTER: submit, follow the job's events (the feed script)
    to the result a `herder worker` on the cluster produced; a submission asking for replica
    acknowledgement (WAIT) is refused with a clear 422 and writes nothing."""
    import httpx
    import redis as sync_redis

    from api_server import ApiServer, auth, make_token
    from procs import APPS

    if APPS not in sys.path:
        sys.path.insert(0, APPS)

    settings = HerderSettings(redis_url=cluster.url, redis_cluster=True, lease_seconds=2.0)
    env = dict(os.environ)
    env.update(HERDER_REDIS_URL=cluster.url, HERDER_REDIS_CLUSTER="true", HERDER_LEASE_SECONDS="2")
    env.pop("HERDER_APP", None)
    rc = sync_redis.RedisCluster.from_url(cluster.url, decode_responses=True)
    worker = WorkerProc(env, "api-w", queue="api", app="api_app", log=tmp_path / "w.log")
    try:
        token, _ = make_token(rc, ["api"], "submit,read")
        with (
            ApiServer(settings, load_taskset("api_app")) as api,
            httpx.Client(base_url=api.url, timeout=30) as http,
        ):
            refused = http.post(
                "/v1/queues/api/jobs?replicas=1", json={"task": "echo", "id": "w1"}, headers=auth(token)
            )
            assert refused.status_code == 422, refused.text
            assert "Redis Cluster" in refused.json()["detail"][0]["msg"]
            assert rc.exists(QueueKeys("herder", "api").job("w1")) == 0
            resp = http.post(
                "/v1/queues/api/jobs", json={"task": "steps", "payload": {"steps": 2}}, headers=auth(token)
            )
            assert resp.status_code == 201, resp.text
            job_id = resp.json()["id"]
            with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth(token)) as stream:
                kinds = [line[7:] for line in stream.iter_lines() if line.startswith("event: ")]
            assert kinds[0] == "snapshot" and kinds.count("log") == 2 and kinds[-1] == "result"
            got = http.get(f"/v1/jobs/{job_id}", headers=auth(token)).json()
            assert got["state"] == "succeeded" and got["result"] == {"done": 2}
    finally:
        worker.stop()
        rc.close()


async def test_dashboard_reads_the_cluster(cluster: RedisClusterProc) -> None:
    """The dashboard with HERDER_REDIS_CLUSTER: queues, a queue, job pages of every state (SORT_RO
    of the waiting set, the filter script), a job, its graph, trends, and a pause/resume."""
    import httpx

    from api_server import ThreadedServer
    from herder.dashboard import create_app

    settings = HerderSettings(redis_url=cluster.url, redis_cluster=True, lease_seconds=2.0)
    async with HerderClient(settings) as c:
        parent = await c.enqueue("web", "echo", {"x": 1}, id="p1")
        await c.enqueue("web", "echo", {"x": 2}, id="c1", after=[parent.id])
    app = create_app(settings, token="op", read_token="", allowed_hosts=[])
    headers = {"Authorization": "Bearer op"}
    with ThreadedServer(app, timeout_graceful_shutdown=2) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            assert "web" in str((await http.get("/api/queues")).json())
            assert (await http.get("/api/queues/web")).status_code == 200
            for state in ("ready", "waiting", "scheduled", "active", "dead", "succeeded"):
                page = await http.get("/api/queues/web/jobs", params={"state": state, "task": "echo"})
                assert page.status_code == 200, (state, page.text)
            assert [
                j["id"] for j in (await http.get("/api/queues/web/jobs?state=waiting")).json()["items"]
            ] == ["c1"]
            assert (await http.get("/api/jobs/p1")).json()["state"] == "ready"
            assert (await http.get("/api/jobs/c1/graph")).status_code == 200
            assert (await http.get("/api/queues/web/trends")).status_code == 200
            assert (await http.post("/api/queues/web/pause")).status_code == 200
            assert (await http.post("/api/queues/web/resume")).status_code == 200


def test_cli_on_the_cluster(cluster: RedisClusterProc) -> None:
    """The `herder` CLI with HERDER_REDIS_CLUSTER: enqueue, job, status, queues, pause/resume,
    the DLQ and API tokens (the token hash is a global key: one slot)."""
    import subprocess

    env = dict(os.environ)
    env.update(HERDER_REDIS_URL=cluster.url, HERDER_REDIS_CLUSTER="true")
    env.pop("HERDER_APP", None)

    def herder(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "herder.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    job_id = json.loads(herder("enqueue", "cq", "echo", "--payload", '{"x": 1}', "--json"))["id"]
    assert json.loads(herder("job", job_id, "--json"))["state"] == "ready"
    herder("pause", "cq")
    assert json.loads(herder("status", "cq", "--json"))["paused"] is True
    herder("resume", "cq")
    assert "cq" in herder("queues")
    herder("dlq", "list", "cq")
    herder("token", "create", "--queue", "cq", "--can", "submit")
    assert "cq" in herder("token", "list")


async def test_least_privilege_worker_on_the_cluster(cluster: RedisClusterProc) -> None:
    """`herder acl worker --cluster` gives a worker what the cluster client needs on top of its
    role (CLUSTER SLOTS, COMMAND, ...): with it a worker runs its queue; with the single-Redis
    rule the client cannot even read the slot map. ACL users are per node: set on every one."""
    import redis as sync_redis

    from herder.acl import acl_rule

    rules = {"w-cluster": acl_rule("worker", ["aq"], user="w-cluster", cluster=True),
             "w-plain": acl_rule("worker", ["aq"], user="w-plain")}  # fmt: skip
    for node in cluster.live():
        with sync_redis.Redis(port=node.port) as r:
            for user, rule in rules.items():
                r.execute_command(*rule.split())
                r.execute_command("ACL", "SETUSER", user, ">pw")
    try:
        admin = HerderSettings(redis_url=cluster.url, redis_cluster=True, lease_seconds=2.0)

        def as_user(user: str) -> HerderSettings:
            return HerderSettings(
                redis_url=cluster.url,
                redis_cluster=True,
                redis_username=user,
                redis_password="pw",
                lease_seconds=2.0,
            )

        async with HerderClient(admin) as c:
            job = await c.enqueue("aq", "echo", {"acl": True})
            async with running_worker(as_user("w-cluster"), "aq"):
                assert (await wait_state(c, job.id, "succeeded", "dead")).state == "succeeded"
        async with HerderClient(as_user("w-plain")) as plain:
            with pytest.raises(NoPermissionError, match="herder acl ROLE --cluster"):
                await plain.status("aq")
    finally:
        for node in cluster.live():
            with sync_redis.Redis(port=node.port) as r:
                r.execute_command("ACL", "DELUSER", *rules)
