"""The Lua interface: headers match bodies, keys are named once, every state write is a named
helper, docs/queue.md's tables match the code, and the Lua rules agree with the Python ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from herder.backoff import Backoff, retry_delay
from herder.browse import Browser
from herder.client import HerderClient, JobRequest
from herder.keys import KEY_FAMILIES, QUEUE_KEYS
from herder.scripts import (
    SCRIPT_NAMES,
    ScriptError,
    lua_dir,
    parse_keys,
    spec,
    state_helpers,
    transitions,
)
from herder.settings import HerderSettings

ROOT = Path(__file__).parent.parent
LUA = ROOT / "worker" / "herder" / "lua"
DOC = (ROOT / "docs" / "queue.md").read_text()


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_script_has_a_header_matching_its_body(name: str) -> None:
    text = (LUA / f"{name}.lua").read_text()
    head = text.split("\n\n", 1)[0]
    for field in ("-- KEYS:", "-- ARGV:", "-- Reply:"):
        assert field in head, f"{name}.lua header lacks {field}"
    spec(name)  # raises ScriptError when the KEYS line and the body disagree


def test_a_header_that_lies_does_not_load() -> None:
    with pytest.raises(ScriptError, match="unknown queue key"):
        parse_keys("-- KEYS: ready bogus\n", "x")
    with pytest.raises(ScriptError, match="unknown key family"):
        parse_keys("-- KEYS: nope(2)\n", "x")
    with pytest.raises(ScriptError, match="twice"):
        parse_keys("-- KEYS: ready ready\n", "x")


def test_key_names_live_in_python_only() -> None:
    """No script spells a queue key or key family itself: only the generated bindings do."""
    names = "|".join([*QUEUE_KEYS, *KEY_FAMILIES])
    inline = re.compile(rf"':({names})\b")
    for path in [*LUA.glob("*.lua"), *LUA.glob("lib/*.lua")]:
        if path.stem in ("match", "trend"):
            continue  # standalone scripts of the dashboard (they take the key base in ARGV)
        assert not inline.search(path.read_text()), f"{path.name} builds a key name inline"


def test_state_is_written_only_by_the_transition_helpers() -> None:
    write = re.compile(r"'HM?SET',[^\n]*'state',")
    for path in [*LUA.glob("*.lua"), *LUA.glob("lib/*.lua")]:
        if not path.name.startswith("state"):
            assert not write.search(path.read_text()), f"{path.name} writes a job state itself"
    # one helper per target state, and every state has one
    helpers = state_helpers()
    assert sorted(helpers.values()) == sorted(set(helpers.values()))
    assert set(helpers.values()) == {
        "waiting", "scheduled", "ready", "active", "succeeded", "dead", "cancelled"
    }  # fmt: skip


def test_docs_state_table_matches_the_code() -> None:
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|[^|]*\|[^|]*\| ([a-z, ]+) \|$", DOC, re.M)
    assert rows, "docs/queue.md has no state table"
    documented = {state: (helper, {s.strip() for s in scripts.split(",")}) for state, helper, scripts in rows}
    helpers = {state: fn for fn, state in state_helpers().items()}
    code = transitions()
    assert documented.keys() == code.keys()
    for state, (helper, scripts) in documented.items():
        assert helper == helpers[state], state
        assert scripts == code[state], f"{state}: docs say {sorted(scripts)}, code {sorted(code[state])}"


def test_docs_list_every_key() -> None:
    for k in QUEUE_KEYS:
        assert f"`herder:{{q}}:{k}`" in DOC, k
    for f in KEY_FAMILIES:
        assert re.search(rf"`herder:\{{q\}}:{f}:<\w+>`", DOC), f


def test_libraries_exist_for_every_include() -> None:
    for name in SCRIPT_NAMES:
        for lib in spec(name).includes:
            assert (lua_dir() / "lib" / f"{lib}.lua").is_file()


async def test_lua_backoff_agrees_with_python(settings: HerderSettings) -> None:
    """rules.lua's backoff_ms (used when a lease expires) is backoff.py's formula."""
    rules = (LUA / "lib" / "rules.lua").read_text()
    probe = rules + "\nreturn backoff_ms(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))"
    async with HerderClient(settings) as c:
        for policy in (Backoff(), Backoff(base_seconds=0.5, factor=3, max_seconds=40, jitter=0.5)):
            for attempt in (1, 2, 5, 30):
                for u in (-1.0, -0.3, 0.0, 0.7, 1.0):
                    got = await c.redis.eval(probe, 0, policy.model_dump_json(), attempt, u)
                    want = int(retry_delay(policy, attempt, u) * 1000)
                    assert abs(int(got) - want) <= 1, (policy, attempt, u, got, want)
        # a corrupt policy (the job hash is producer-writable) falls back to the defaults
        assert int(await c.redis.eval(probe, 0, "{not json", 1, 0)) == 1000


async def _claim_and_expire(c: HerderClient, queue: str, job_id: str) -> None:
    """Claim the job with a 50 ms lease as a worker that then vanishes, and reap it as another."""
    keys = c.keys(queue)
    got = await c.scripts.claim(keys, "gone", 1, 50, "[]", "", "0")
    assert [j[0] for j in got[0]] == [job_id]

    async def redis_ms() -> int:
        sec, usec = await c.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    expiry = int(await c.redis.zscore(keys.active, job_id))
    while await redis_ms() <= expiry:  # waits on Redis's clock passing the lease, not a sleep
        pass
    reply = await c.scripts.claim(keys, "reaper", 0, 10_000, "[]", "", "1")
    assert int(reply[8]) == 1  # one lease reaped


async def test_an_expired_lease_retries_with_the_jobs_backoff(settings: HerderSettings) -> None:
    async with HerderClient(settings) as c:
        policy = Backoff(base_seconds=30, factor=2, jitter=0)
        job = await c.enqueue("lq", "echo", {"x": 1}, max_attempts=3, backoff=policy)
        await _claim_and_expire(c, "lq", job.id)
        j = await c.get_job(job.id, "lq")
        assert j.state == "scheduled" and j.attempts == 1
        assert j.errors[0].kind == "lease_expired" and j.errors[0].worker == "gone"
        due = int(await c.redis.zscore(c.keys("lq").scheduled, job.id))
        sec, usec = await c.redis.time()
        assert 28_000 <= due - (int(sec) * 1000 + int(usec) // 1000) <= 30_000
        assert (await c.status("lq")).counters["retried"] == 1


async def test_an_expired_lease_on_the_last_attempt_dead_letters_by_the_same_rule(
    settings: HerderSettings,
) -> None:
    async with HerderClient(settings) as c:
        job = await c.enqueue("lq", "echo", {"x": 1}, max_attempts=1)
        await _claim_and_expire(c, "lq", job.id)
        j = await c.get_job(job.id, "lq")
        assert j.state == "dead"
        assert j.dead_reason == "out of attempts (1/1): lease expired: worker gone stopped heartbeating"


async def test_a_finish_batch_expires_results_and_logs_and_releases_children(
    settings: HerderSettings,
) -> None:
    """finish.lua looks for children sets and event logs with one EXISTS per batch: the jobs
    that have them still get them resolved and expired, the others are left alone."""
    async with HerderClient(settings) as c:
        keys = c.keys("fq")
        logged = await c.enqueue("fq", "echo", {"n": 1})
        plain = await c.enqueue("fq", "echo", {"n": 2})
        child = await c.enqueue("fq", "echo", {"n": 3}, after=[logged.id])
        reply = await c.scripts.claim(keys, "w", 2, 60_000, "[]", "", "0")
        tokens = {row[0]: str(row[3]) for row in reply[0]}
        assert set(tokens) == {logged.id, plain.id}
        await c.redis.rpush(keys.log(logged.id), '{"_n":0}')
        args: list[str] = []
        for jid in (logged.id, plain.id):
            args += [jid, tokens[jid], "ok", "null", "0", ""]
        assert await c.scripts.finish(keys, "w", 60_000, 10_000, *args) == ["succeeded", "succeeded"]
        for key in (keys.job(logged.id), keys.job(plain.id), keys.log(logged.id)):
            assert 0 < await c.redis.pttl(key) <= 60_000, key
        assert not await c.redis.exists(keys.log(plain.id), keys.children(logged.id))
        assert (await c.get_job(child.id, "fq")).state == "ready"
        assert await c.redis.zcard(keys.active) == 0
        assert (await c.status("fq")).counters["succeeded"] == 2


async def test_a_finish_batch_notes_succeeded_and_cancelled_ids_in_the_bounded_recent_index(
    settings: HerderSettings,
) -> None:
    """finish.lua writes the browse index of finished jobs (herder.recent) with the outcomes, in
    the same call: succeeded and cancelled ids, each under its state, other outcomes not; past
    the cap plus 1/32 the index is trimmed back to the cap (ARGV 4)."""
    async with HerderClient(settings) as c:
        keys = c.keys("rq")
        jobs = [await c.enqueue("rq", "echo", {"n": i}) for i in range(40)]
        reply = await c.scripts.claim(keys, "w", 40, 60_000, "[]", "", "0")
        tokens = {row[0]: str(row[3]) for row in reply[0]}
        outcomes = ["ok"] * 37 + ["cancelled", "retry", "dead"]
        args: list[str] = []
        for j, outcome in zip(jobs, outcomes, strict=True):
            args += [j.id, tokens[j.id], outcome, "null" if outcome == "ok" else "{}", "0", "x"]
        out = await c.scripts.finish(keys, "w", 60_000, 32, *args)
        assert out == ["succeeded"] * 37 + ["cancelled", "ready", "dead"]  # retry, no delay: ready
        succeeded = await c.redis.zrange(keys.recent("succeeded"), 0, -1)
        assert len(succeeded) == 32 and set(succeeded) <= {j.id for j in jobs[:37]}  # 37 > 32 + 1: trimmed
        assert await c.redis.zrange(keys.recent("cancelled"), 0, -1) == [jobs[37].id]
        page = await Browser(c.redis, keys).page("succeeded", limit=100)  # what the dashboard lists
        assert {row["id"] for row in page.items} == set(succeeded) and page.total == 32


async def test_scripts_are_loaded_again_after_a_script_flush(settings: HerderSettings) -> None:
    """A server that lost its scripts (SCRIPT FLUSH, a restart, a failover to a replica that
    never saw them) answers NOSCRIPT once: the call loads the script and runs it."""
    async with HerderClient(settings) as c:
        await c.enqueue("sf", "echo", {"n": 1})
        await c.redis.script_flush()
        await c.enqueue("sf", "echo", {"n": 2})
        await c.redis.script_flush()
        assert (await c.status("sf")).ready == 2  # status runs read-only (EVALSHA_RO)


async def test_the_wake_list_stays_bounded_with_no_worker_listening(settings: HerderSettings) -> None:
    """Every enqueue pushes a wake token; with nobody popping them the list is trimmed back to
    MAX_WAKE (256) once it passes twice that, so it never holds more than 512."""
    async with HerderClient(settings) as c:
        keys = c.keys("wq")
        lengths = []
        for start in range(0, 1200, 100):
            await c.enqueue_many(
                "wq", [JobRequest(task="echo", payload={"n": n}) for n in range(start, start + 100)]
            )
            lengths.append(await c.redis.llen(keys.wake))
        assert max(lengths) <= 512 and min(lengths[3:]) >= 256


@pytest.mark.parametrize("field,value", [("max_attempts", "lots"), ("attempts", "1e3"), ("started_at", "?")])
async def test_an_expired_lease_on_a_corrupt_job_dead_letters_it_and_reaps_the_rest(
    settings: HerderSettings, field: str, value: str
) -> None:
    """The job hash is producer-writable: a corrupt counter on an active job must not fail the
    reaping claim (a Lua error mid-script keeps the writes made so far: leases half reaped)."""
    async with HerderClient(settings) as c:
        keys = c.keys("lq")
        bad = await c.enqueue("lq", "echo", {"x": 1}, max_attempts=3)
        good = await c.enqueue("lq", "echo", {"x": 2}, max_attempts=3)
        child = await c.enqueue("lq", "echo", {"x": 3}, after=[bad.id])
        got = await c.scripts.claim(keys, "gone", 2, 50, "[]", "", "0")
        assert sorted(j[0] for j in got[0]) == sorted([bad.id, good.id])
        await c.redis.hset(keys.job(bad.id), field, value)
        expiry = max(int(s) for _, s in await c.redis.zrange(keys.active, 0, -1, withscores=True))
        while True:  # waits on Redis's clock passing the leases, not a sleep
            sec, usec = await c.redis.time()
            if int(sec) * 1000 + int(usec) // 1000 > expiry:
                break
        reply = await c.scripts.claim(keys, "reaper", 0, 10_000, "[]", "", "1")
        assert int(reply[8]) == 2  # both leases reaped
        raw = await c.redis.hmget(keys.job(bad.id), "state", "dead_reason")
        if field == "started_at":  # only the error record's time was corrupt: a normal retry
            assert raw[0] == "scheduled", raw
        else:
            assert raw[0] == "dead" and "corrupt job" in raw[1], raw
            assert (await c.get_job(child.id, "lq")).state == "dead"
        assert (await c.get_job(good.id, "lq")).state == "scheduled"


@pytest.mark.parametrize("outcome", ["retry", "handback"])
async def test_finishing_a_job_with_corrupt_counters_dead_letters_it_and_stores_its_batch_mates(
    settings: HerderSettings, outcome: str
) -> None:
    async with HerderClient(settings) as c:
        keys = c.keys("lq")
        bad = await c.enqueue("lq", "echo", {"x": 1}, max_attempts=3)
        mate = await c.enqueue("lq", "echo", {"x": 2}, max_attempts=3)
        got = await c.scripts.claim(keys, "w", 2, 60_000, "[]", "", "0")
        tokens = {j[0]: str(j[3]) for j in got[0]}
        await c.redis.hset(keys.job(bad.id), "max_attempts", "many")
        err = '{"attempt": 1, "kind": "error", "message": "boom"}'
        out = await c.scripts.finish(
            keys, "w", "60000", "10000",
            bad.id, tokens[bad.id], outcome, err, "0", "boom",
            mate.id, tokens[mate.id], "ok", "1", "0", "",
        )  # fmt: skip
        assert out == ["dead", "succeeded"]
        raw = await c.redis.hmget(keys.job(bad.id), "state", "dead_reason")
        assert raw[0] == "dead" and "corrupt job" in raw[1], raw
        assert (await c.get_job(mate.id, "lq")).state == "succeeded"
        assert await c.redis.zcard(keys.active) == 0
