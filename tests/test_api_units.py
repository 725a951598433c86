"""The API's pure parts: token scopes and parsing, the rate limiter, the durability plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from herder.api.durability import CannotConfirm, Durability, Plan, ServerFacts, confirmed, plan
from herder.api.ratelimit import RateLimiter
from herder.api.tokens import (
    FileTokenStore,
    Verb,
    append_token_file,
    new_token,
    parse_record,
    parse_verbs,
    split_token,
    verify,
)
from herder.errors import InvalidInput


def test_token_scopes_and_format() -> None:
    token, rec = new_token(["a", "b"], [Verb.submit], "ci")
    tid, secret = split_token(token) or ("", "")
    assert tid == rec.id and verify(rec, secret) and not verify(rec, secret[:-1] + "x")
    assert (
        rec.allows(Verb.submit, "a") and not rec.allows(Verb.read, "a") and not rec.allows(Verb.submit, "c")
    )
    _, star = new_token(["*"], [Verb.read])
    assert star.allows(Verb.read, "anything") and star.readable(["x", "y"]) == ["x", "y"]
    assert split_token("hdr_zz_" + "a" * 43) is None and split_token(token + "x") is None
    assert secret not in rec.model_dump_json()


def test_bad_token_input_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="unknown verb 'write'"):
        parse_verbs("submit,write")
    with pytest.raises(InvalidInput, match="at least one verb"):
        parse_verbs(" , ")
    with pytest.raises(InvalidInput, match="invalid queue name"):
        new_token(["{evil}"], [Verb.read])
    with pytest.raises(InvalidInput, match="invalid queue name"):
        new_token(["a\n"], [Verb.read])  # a trailing newline must not pass as queue "a"
    with pytest.raises(InvalidInput):
        new_token([], [Verb.read])
    for raw in (
        "",
        "{",
        "[]",
        '{"id": "x"}',
        json.dumps({"id": "a" * 12, "sha256": "0" * 64, "queues": [], "verbs": ["read"]}),
    ):
        assert parse_record(raw) is None


def test_file_store_reloads_on_change_and_refuses_a_corrupt_file(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    assert asyncio.run(store.list()) == []
    _, rec = new_token(["a"], [Verb.read])
    append_token_file(path, rec)
    assert asyncio.run(store.get(rec.id)) == rec
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read token file"):
        asyncio.run(store.get(rec.id))


def test_rate_limiter_refills_and_keeps_keys_apart() -> None:
    rl = RateLimiter(rate=2.0, burst=2)
    assert [rl.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert rl.take("b", 0.0) == 0.0
    assert rl.take("a", 0.5) == 0.0  # one token back after 0.5 s
    assert rl.take("a", 0.5) > 0
    small = RateLimiter(rate=1, burst=1, max_keys=2)
    for k in "xyz":
        small.take(k, 0.0)
    assert len(small._buckets) == 2


def test_durability_plan() -> None:
    old_always = ServerFacts((7, 0), True, "always")
    old_everysec = ServerFacts((7, 0), True, "everysec")
    new = ServerFacts((7, 4), True, "everysec")
    no_aof = ServerFacts((7, 4), False, "everysec")
    assert plan(new, Durability.ack, 0, 100) == Plan(None, False, 0)
    assert plan(new, Durability.ack, 2, 100) == Plan(("WAIT", 2, 100), False, 2)
    assert plan(new, Durability.fsync, 1, 100) == Plan(("WAITAOF", 1, 1, 100), True, 1)
    assert plan(old_always, Durability.fsync, 0, 100) == Plan(None, True, 0)
    with pytest.raises(CannotConfirm, match="appendonly"):
        plan(no_aof, Durability.fsync, 0, 100)
    with pytest.raises(CannotConfirm, match=r"7\.2"):
        plan(old_everysec, Durability.fsync, 0, 100)
    with pytest.raises(CannotConfirm, match="unknown"):
        plan(ServerFacts((7, 0), True, None), Durability.fsync, 0, 100)
    assert confirmed(Plan(("WAITAOF", 1, 1, 100), True, 1), [1, 1])
    assert not confirmed(Plan(("WAITAOF", 1, 1, 100), True, 1), [1, 0])
    assert not confirmed(Plan(("WAIT", 2, 100), False, 2), 1)
