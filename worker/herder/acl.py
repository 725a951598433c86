"""Least-privilege Redis ACL rules for each Herder role, generated from the code that runs.

A role's commands are the commands its client calls directly plus every command inside the Lua
scripts it runs (parsed from worker/herder/lua, so a script change updates the rules). Its keys
are the keys of the queues it serves (``prefix:{queue}:*``, all in the queue's hash tag) and,
where needed, the queue index. tests/test_acl.py runs every role against a real redis-server
loaded from an aclfile: each does its job, and KEYS, FLUSHALL, CONFIG and other queues' keys are
denied.

What Redis cannot separate: Redis checks the commands a script runs against the caller's ACL,
so a producer allowed to run the enqueue script may also run HSET on the keys that script
writes. The producer rule is narrowed to exactly those keys (job hashes, the pending sets,
counters); it cannot touch the worker registry, leases (``active``), control channels, the pause
flag or event logs. What it can forge (a job hash's fields) the worker treats as untrusted input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from herder.errors import InvalidInput
from herder.keys import queues_key, valid_queue
from herder.scripts import is_readonly

_CALL_RE = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")


_FUNC_RE = re.compile(r"^local function (\w+)", re.M)


def _lua_dir() -> Traversable:
    return resources.files("herder") / "lua"


@cache
def _prelude_functions() -> dict[str, str]:
    """The shared Lua libraries (lua/lib/*.lua) split into their top-level functions' sources."""
    out: dict[str, str] = {}
    for lib in sorted((_lua_dir() / "lib").iterdir(), key=lambda p: p.name):
        if not lib.name.endswith(".lua"):
            continue
        src = lib.read_text()
        starts = list(_FUNC_RE.finditer(src))
        for i, m in enumerate(starts):
            out[m.group(1)] = src[m.start() : starts[i + 1].start() if i + 1 < len(starts) else len(src)]
    return out


@cache
def script_commands(name: str) -> frozenset[str]:
    """Every Redis command the Lua script `name` may call: its own, plus those of the library
    functions it uses (transitively). Unused library functions do not widen a role."""
    funcs = _prelude_functions()
    seen: set[str] = set()
    todo = [(_lua_dir() / f"{name}.lua").read_text()]
    cmds: set[str] = set()
    while todo:
        src = todo.pop()
        cmds |= {c.lower() for c in _CALL_RE.findall(src)}
        for fn, body in funcs.items():
            if fn not in seen and re.search(rf"\b{fn}\(", src):
                seen.add(fn)
                todo.append(body)
    return frozenset(cmds)


# Running a script: EVALSHA, and SCRIPT LOAD when the server does not know it yet (redis-py's
# Script object retries NOSCRIPT that way). Plain EVAL is not needed and not granted.
_SCRIPTING = ("evalsha", "script|load")
# Read-only scripts (`-- @readonly`, e.g. status) run with EVALSHA_RO: read access to their keys
# is enough, where EVALSHA would need write access to every key it declares.
_SCRIPTING_RO = ("evalsha_ro", "script|load")
# Queue-level keys the enqueue script writes (its KEYS header, and lua/lib/state.lua); everything a producer needs.
_PRODUCER_KEYS = (
    "job:*",
    "children:*",
    "ready",
    "readyc",
    "scheduled",
    "waiting",
    "dead",
    "stats",
    "wake",
)


@dataclass(frozen=True)
class Role:
    name: str
    summary: str
    scripts: tuple[str, ...]
    commands: tuple[str, ...]  # called directly by the role's Python code
    queue_keys: tuple[str, ...]  # patterns below prefix:{queue}: ("*" = the whole queue)
    read_keys: tuple[str, ...] = ()  # read-only patterns below prefix:{queue}:
    index: str = ""  # "", "r" (read the queue index) or "rw" (also add to it)
    all_queues: bool = False  # serves every queue (the operator, dashboard and exporter)
    global_read_keys: tuple[str, ...] = ()  # read-only keys below prefix: outside any queue

    def all_commands(self) -> list[str]:
        cmds = set(self.commands)
        for s in self.scripts:
            cmds |= script_commands(s)
        if any(not is_readonly(s) for s in self.scripts):
            cmds |= set(_SCRIPTING)
        if any(is_readonly(s) for s in self.scripts):
            cmds |= set(_SCRIPTING_RO)
        return sorted(cmds)


_READ = ("smembers", "sscan", "exists", "hgetall", "hget", "hmget", "lrange", "zrange")
# What the dashboard reads besides: browsing by state (counts, pages, SORT_RO of the waiting set),
# the job-event feed (EVALSHA_RO of lua/feed.lua: HMGET/HGET/HSTRLEN/LINDEX/LLEN/LRANGE), trends
# (TIME) and the read-only filter script (EVALSHA_RO of lua/match.lua: read access to the job
# hashes is enough).
_DASHBOARD_READ = (
    *_READ,
    "zcard",
    "scard",
    "zrevrange",
    "sort_ro",
    "hstrlen",
    "llen",
    "lindex",
    "time",
    "evalsha_ro",
    "script|load",
    "get",  # the cron secret, to list a cron task's recent ticks by id
)

ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "producer",
            "enqueue jobs and read them back (herder enqueue, herder job)",
            scripts=("enqueue",),
            commands=("sadd", "smembers", "sscan", "exists", "hgetall", "lrange"),
            queue_keys=_PRODUCER_KEYS,
            read_keys=("log:*",),
            index="rw",
        ),
        Role(
            "worker",
            "run one queue's jobs: claim, heartbeat, finish, progress, event log, cron ticks",
            scripts=("claim", "finish", "progress", "enqueue", "trend"),
            commands=(
                *("blpop", "rpush", "ltrim", "lindex", "llen", "zrem", "del"),
                *("sadd", "smembers", "ping", "zadd", "zremrangebyrank"),
            ),
            queue_keys=("*",),
            index="rw",
        ),
        Role(
            "operator",
            "read every queue's status and drain/undrain workers for scale-down",
            scripts=("status", "drain"),
            commands=("smembers", "sscan", "exists"),
            # EVALSHA needs write access to the keys it declares (drain: the worker's own keys).
            queue_keys=("worker:*", "ctl:*"),
            read_keys=("*",),
            index="r",
            all_queues=True,
        ),
        Role(
            "dashboard-read",
            "the dashboard without the token: queues, jobs, DLQ, logs (read-only)",
            scripts=("status",),
            commands=_DASHBOARD_READ,
            queue_keys=(),  # status runs with EVALSHA_RO: read_keys suffice
            read_keys=("*",),
            index="r",
            all_queues=True,
        ),
        Role(
            "dashboard-ops",
            "the dashboard with the token: also pause, resume, cancel, remove, replay, drain",
            scripts=("status", "resume", "cancel", "remove", "replay", "drain"),
            commands=(*_DASHBOARD_READ, "set", "zadd", "zremrangebyrank"),
            queue_keys=("*",),
            index="r",
            all_queues=True,
        ),
        Role(
            "api",
            "herder api: submit, read, follow and operate jobs of any queue its tokens allow; "
            "reads the token records; WAIT for durable submissions",
            scripts=("enqueue", "status", "cancel", "remove", "replay"),
            # WAITAOF (Redis >= 7.2) is left out so the rule loads on 7.0; add +waitaof there.
            commands=(*_DASHBOARD_READ, "sadd", "ping", "info", "wait"),
            queue_keys=("*",),
            index="rw",
            all_queues=True,
            global_read_keys=("api:tokens",),
        ),
        Role(
            "exporter",
            "herder metrics: queue depth, workers and counters at scrape time (read-only)",
            scripts=("status",),
            commands=("smembers", "sscan"),
            queue_keys=(),  # status runs with EVALSHA_RO: read_keys suffice
            read_keys=("*",),
            index="r",
            all_queues=True,
        ),
    )
}


def key_patterns(role: Role, prefix: str, queues: list[str]) -> list[str]:
    """ACL key selectors: ``~pattern`` (read and write) and ``%R~pattern`` (read only)."""
    bases = [f"{prefix}:{{*}}:"] if role.all_queues else [f"{prefix}:{{{q}}}:" for q in queues]
    out = [f"~{b}{k}" for b in bases for k in role.queue_keys]
    out += [f"%R~{b}{k}" for b in bases for k in role.read_keys]
    out += [f"%R~{prefix}:{k}" for k in role.global_read_keys]
    if role.index == "rw":
        out.append(f"~{queues_key(prefix)}")
    elif role.index == "r":
        out.append(f"%R~{queues_key(prefix)}")
    return out


# What redis-py's cluster client sends besides the role's own commands: the slot map (CLUSTER
# SLOTS), the command table and the keys of commands with movable keys (COMMAND, COMMAND
# GETKEYS), a liveness probe (PING) and ASKING during a slot migration.
CLUSTER_CLIENT_COMMANDS = ("cluster|slots", "command", "ping", "asking")


def acl_rule(
    role_name: str,
    queues: list[str],
    *,
    user: str | None = None,
    prefix: str = "herder",
    cluster: bool = False,
) -> str:
    """The ``ACL SETUSER`` line for a role (with `cluster`: also what the cluster client needs;
    create the user on every node). No password is included: add one with a separate
    ``ACL SETUSER <user> >secret`` (or ``#sha256``) so it stays out of files and shell history."""
    role = ROLES.get(role_name)
    if role is None:
        raise InvalidInput(f"unknown role {role_name!r} (known: {', '.join(ROLES)})")
    if not role.all_queues and not queues:
        raise InvalidInput(f"role {role_name} serves given queues: pass --queue")
    for q in queues:
        if not valid_queue(q):
            raise InvalidInput(f"invalid queue name {q!r}")
    if any(c in prefix for c in "{}* ?[]\\\n"):
        raise InvalidInput(f"invalid key prefix {prefix!r}")
    name = user or f"herder-{role_name}" + (
        f"-{queues[0]}" if len(queues) == 1 and not role.all_queues else ""
    )
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise InvalidInput(f"invalid user name {name!r}")
    parts = ["ACL", "SETUSER", name, "reset", "on", "resetchannels", "-@all"]
    parts += [f"+{c}" for c in sorted({*role.all_commands(), *(CLUSTER_CLIENT_COMMANDS if cluster else ())})]
    parts += key_patterns(role, prefix, queues)
    return " ".join(parts)


def aclfile_line(rule: str, password_sha256: str) -> str:
    """The same rule in aclfile form (``user NAME ...``), with a hashed password."""
    words = rule.split()
    if words[:2] != ["ACL", "SETUSER"]:
        raise ValueError("not an ACL SETUSER rule")
    return " ".join(["user", words[2], *words[3:], f"#{password_sha256}"])
