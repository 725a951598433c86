"""`herder token`, `herder schema` and `herder api`'s refusals, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import redis

from herder.keys import api_tokens_key
from redis_proc import RedisProc

CLI = [sys.executable, "-m", "herder.cli"]


def herder(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_token_create_list_revoke(worker_env: dict[str, str], redis_server: RedisProc) -> None:
    r = redis.Redis(port=redis_server.port, decode_responses=True)
    made = herder(
        worker_env, "token", "create", "--queue", "a", "--queue", "b", "--can", "submit,read", "--name", "ci"
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("hdr_") and "read,submit on a,b" in made.stderr
    token_id, secret = token.split("_")[1], token.split("_", 2)[2]
    stored = r.hget(api_tokens_key("herder"), token_id)
    assert stored is not None and secret not in stored
    listed = [json.loads(x) for x in herder(worker_env, "token", "list").stdout.splitlines()]
    assert [(t["id"], t["queues"], t["verbs"], t["name"]) for t in listed] == [
        (token_id, ["a", "b"], ["read", "submit"], "ci")
    ]
    assert "sha256" not in listed[0]
    assert herder(worker_env, "token", "revoke", token_id).returncode == 0
    assert r.hlen(api_tokens_key("herder")) == 0
    gone = herder(worker_env, "token", "revoke", token_id)
    assert gone.returncode == 1 and "no token" in gone.stderr


def test_bad_token_requests_exit_2_and_write_nothing(
    worker_env: dict[str, str], redis_server: RedisProc
) -> None:
    r = redis.Redis(port=redis_server.port, decode_responses=True)
    for args, needle in [
        (["--queue", "a", "--can", "submit,delete"], "unknown verb 'delete'"),
        (["--queue", "a b", "--can", "read"], "invalid queue name"),
        (["--queue", "a", "--can", ","], "at least one verb"),
    ]:
        p = herder(worker_env, "token", "create", *args)
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)
    assert r.dbsize() == 0
    down = herder(
        worker_env, "token", "create", "--queue", "a", "--can", "read", "--redis-url", "redis://127.0.0.1:1/0"
    )
    assert down.returncode == 1 and "cannot store the token" in down.stderr and not down.stdout


def test_token_file_store(worker_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    for q in ("a", "b"):
        p = herder(worker_env, "token", "create", "--queue", q, "--can", "read", "--tokens-file", str(path))
        assert p.returncode == 0, p.stderr
    records = json.loads(path.read_text())
    assert [r["queues"] for r in records] == [["a"], ["b"]] and path.stat().st_mode & 0o777 == 0o600
    path.write_text("{broken")
    p = herder(worker_env, "token", "list", "--tokens-file", str(path))
    assert p.returncode == 2 and "cannot read token file" in p.stderr


def test_api_refuses_an_open_bind_without_tokens(worker_env: dict[str, str], tmp_path: Path) -> None:
    p = herder(worker_env, "api", "--host", "0.0.0.0", "--port", "1")
    assert p.returncode == 2 and "refusing to listen on 0.0.0.0 with no API tokens" in p.stderr
    empty = tmp_path / "tokens.json"
    empty.write_text("[]")
    p = herder(worker_env, "api", "--host", "0.0.0.0", "--port", "1", "--tokens-file", str(empty))
    assert p.returncode == 2 and "refusing" in p.stderr


def test_schema_has_every_task_payload_and_result(worker_env: dict[str, str]) -> None:
    p = herder(worker_env, "schema")
    assert p.returncode == 0, p.stderr
    schemas = json.loads(p.stdout)
    assert {"echo", "sleep", "claude_code"} <= set(schemas)
    cc = schemas["claude_code"]
    jsonschema.validate({"prompt": "hi", "max_turns": 3}, cc["payload"])
    try:
        jsonschema.validate({"max_turns": 0}, cc["payload"])
        raise AssertionError("an invalid payload passed the schema")
    except jsonschema.ValidationError:
        pass
    assert "total_cost_usd" in cc["result"]["properties"]
    doc = json.loads(herder(worker_env, "schema", "--openapi").stdout)
    schemas_in_doc = doc["components"]["schemas"]
    assert {"SubmitClaudeCode", "ClaudeCodePayload", "ClaudeCodeResult", "Submission", "JobEvent"} <= set(
        schemas_in_doc
    )
    assert schemas_in_doc["Submission"]["oneOf"][0]["discriminator"]["mapping"]["claude_code"].endswith(
        "/SubmitClaudeCode"
    )
    bad = herder(worker_env, "schema", "--app", "no_such_module_xyz")
    assert bad.returncode == 2 and "cannot import" in bad.stderr


def test_the_cli_does_not_import_the_web_stack() -> None:
    # Every `herder` call pays for its imports (tests poll `herder job` in a loop): FastAPI is
    # loaded by `herder api` only.
    code = "import sys, herder.cli; assert not [m for m in sys.modules if m.startswith(('fastapi', 'starlette'))]"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
