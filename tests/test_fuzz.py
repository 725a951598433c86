"""Seeded fuzzing of the client against a real redis-server: thousands of hostile calls, and
every one either succeeds or fails with one of Herder's own errors, having written nothing."""

from __future__ import annotations

import math
import random
from typing import Any

from herder.client import HerderClient, JobRequest
from herder.errors import Conflict, InvalidInput, NotFound

SEED = 10
CASES = 2000

ODD_STRINGS = [
    "",
    " ",
    "a",
    "default",
    "q\n",
    "q\r",
    "\x00",
    "a b",
    "ü",
    "💥",
    "..",
    "-x",
    "{q}",
    "a*",
    "herder-cron-x",
    "x" * 129,
    "x" * 201,
    "x" * 100_000,
    "job:1",
    "a@b",
]
ODD_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**63,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    1e-308,
]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(ODD_STRINGS)
    if kind == 1:
        return rng.choice(ODD_NUMBERS)
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 4 and depth < 3:
        return {rng.choice(ODD_STRINGS)[:50]: odd_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 5:
        deep: Any = "leaf"
        for _ in range(rng.choice([10, 1000, 5000])):
            deep = [deep]
        return deep
    if kind == 6:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(40)))
    if kind == 7:
        return {f"k{i}": "v" * rng.choice([1, 300, 100_000]) for i in range(rng.choice([1, 5, 40]))}
    return rng.random() * rng.choice([1, 1e6, 1e12])


OPTIONS = [*JobRequest.model_fields, "bogus_option"]


def odd_options(rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rng.random() < 0.5:
        return out
    for name in rng.sample(OPTIONS, rng.randrange(1, 3)):
        if name in ("task", "payload"):
            continue
        out[name] = odd_value(rng)
    return out


async def snapshot(c: HerderClient) -> dict[str, Any]:
    return {k: await c.redis.dump(k) for k in sorted(await c.redis.keys("*"))}


async def test_fuzzed_client_calls_raise_only_herder_errors_and_never_half_write(
    client: HerderClient,
) -> None:
    rng = random.Random(SEED)
    tally = {"ok": 0, "rejected": 0}
    for case in range(CASES):
        before = await snapshot(client)
        op = rng.randrange(6)
        queue = "default" if rng.random() < 0.8 else rng.choice(ODD_STRINGS)
        task = rng.choice(["echo", "sleep", "fail"]) if rng.random() < 0.8 else rng.choice(ODD_STRINGS)
        try:
            if op <= 2:
                await client.enqueue(queue, task, odd_value(rng) if op else None, **odd_options(rng))
            elif op == 3:
                reqs = [
                    JobRequest(task=rng.choice(["echo", "nope"]), id=rng.choice([None, "dup", "a", "b"]))
                    for _ in range(rng.randrange(1, 4))
                ]
                await client.enqueue_many(queue, reqs)
            elif op == 4:
                await client.get_job(rng.choice(ODD_STRINGS))
            else:
                await rng.choice([client.cancel, client.remove, client.retry])(rng.choice(ODD_STRINGS))
        except (InvalidInput, NotFound, Conflict):
            tally["rejected"] += 1
            after = await snapshot(client)
            assert after == before, f"case {case}: a rejected call changed Redis"
        except Exception as exc:  # anything else is a traceback a user would see
            raise AssertionError(
                f"case {case} (seed {SEED}): {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        else:
            tally["ok"] += 1
            await client.redis.flushall()  # keep snapshots cheap
            client._known_queues.clear()
    # The generator reaches both outcomes often; a fuzz that only ever fails proves little.
    assert tally["ok"] > CASES // 10 and tally["rejected"] > CASES // 10, tally


# ---- the CLI --------------------------------------------------------------------------------

CLI_CASES = 1200
CLI_STRINGS = [s for s in ODD_STRINGS if "\x00" not in s and len(s) < 1000]  # argv cannot hold NUL


def cli_value(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(CLI_STRINGS)
    if kind == 1:
        return str(rng.choice(ODD_NUMBERS))
    if kind == 2:
        return rng.choice(["{}", "[]", "null", "NaN", '{"a": NaN}', "1e999", "{", '"x"', "[" * 50_000])
    if kind == 3:
        return rng.choice(
            ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "9999-12-31T23:59:59Z", "yesterday"]
        )
    if kind == 4:
        return rng.choice(["default", "echo", "a=b", "=b", "a=", "k=" + "v" * 300])
    return str(rng.randrange(-5, 5))


def cli_file(rng: random.Random, tmp: Any) -> str:
    kind = rng.randrange(6)
    path = tmp / f"f{rng.randrange(1_000_000)}"
    if kind == 0:
        return str(tmp / "missing.jsonl")
    if kind == 1:
        return str(tmp)  # a directory
    if kind == 2:
        path.write_bytes(b'{"task": "echo", "payload": "\xff\xfe"}\n')
    elif kind == 3:
        path.write_text('{"task": "echo", "payload": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    elif kind == 4:
        path.write_text(
            "\n".join(
                rng.choice(['{"task": "echo"}', '{"task": "nope"}', "{", '{"task": "echo", "x": 1}'])
                for _ in range(3)
            )
        )
    else:
        path.write_text('{"task": "echo", "payload": {"i": 1}}\n{"task": "echo", "id": "fz1"}\n')
    return str(path)


def cli_args(rng: random.Random, tmp: Any) -> list[str]:
    cmd = rng.randrange(7)
    q = "default" if rng.random() < 0.7 else rng.choice(CLI_STRINGS)
    if cmd <= 2:
        args = ["enqueue", q, rng.choice(["echo", "echo", "sleep", *CLI_STRINGS])]
        for opt in rng.sample(
            [
                "--payload",
                "--priority",
                "--delay",
                "--at",
                "--after",
                "--id",
                "--label",
                "--max-attempts",
                "--timeout",
                "--capability",
            ],
            rng.randrange(3),
        ):
            args += [opt, cli_value(rng)]
        return args
    if cmd == 3:
        return ["enqueue-many", q, "-f", cli_file(rng, tmp)]
    if cmd == 4:
        return [rng.choice(["job", "cancel", "remove", "retry"]), cli_value(rng)]
    if cmd == 5:
        return rng.choice([["status", q], ["dlq", "list", q, "--limit", cli_value(rng)], ["queues"]])
    return ["acl", rng.choice(["worker", "producer", "exporter", "nobody", *CLI_STRINGS[:5]]), "--queue", q]


def test_fuzzed_cli_never_tracebacks_and_exit_2_writes_nothing(
    redis_server: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    import redis as redis_lib
    import typer.main
    import typer.testing
    from typer.testing import CliRunner

    from herder.cli import app

    command = typer.main.get_command(app)  # built once: typer rebuilds it on every invoke
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)

    rng = random.Random(SEED)
    runner = CliRunner()
    r = redis_lib.Redis(port=redis_server.port)
    env = {"HERDER_REDIS_URL": redis_server.url, "HERDER_APP": ""}

    def snap() -> dict[bytes, Any]:
        return {k: r.dump(k) for k in sorted(r.keys("*"))}

    codes = {0: 0, 1: 0, 2: 0}
    try:
        for case in range(CLI_CASES):
            args = cli_args(rng, tmp_path)
            before = snap()
            res = runner.invoke(app, args, env=env)
            where = f"case {case} (seed {SEED}) herder {' '.join(a[:40] for a in args)[:300]}"
            assert res.exception is None or isinstance(res.exception, SystemExit), (
                f"{where}: {type(res.exception).__name__}: {str(res.exception)[:300]}"
            )
            assert res.exit_code in codes, (where, res.exit_code)
            codes[res.exit_code] += 1
            if res.exit_code:
                lines = [ln for ln in res.stderr.splitlines() if "warning:" not in ln]
                assert len(lines) == 1 and "Traceback" not in res.stderr, (where, res.stderr[:500])
            if res.exit_code == 2:
                assert snap() == before, f"{where}: exit 2 but Redis changed"
            if res.exit_code == 0 and args[0].startswith("enqueue"):
                r.flushall()
    finally:
        r.close()
    assert codes[0] > CLI_CASES // 10 and codes[2] > CLI_CASES // 10, codes
