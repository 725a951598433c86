"""The claude_code payload (validated at enqueue), its argv, and the processor interface."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from herder.errors import InvalidInput
from herder.processors import Processor, register
from herder.processors.claude_code import PROCESSOR, ClaudeCodePayload, claude_code
from herder.processors.claude_code.command import build_argv, format_usd
from herder.processors.claude_code.payload import MAX_PROMPT_BYTES
from herder.tasks import JobContext, Task, TaskSet


@pytest.fixture
def task() -> Task:
    tasks = TaskSet()
    return register(tasks, claude_code, max_attempts=3, timeout=600)


def reject(task: Task, payload: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(InvalidInput) as info:
        task.validate_payload(payload)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- accepted ----------------------------------------------------------------------------


def test_minimal_payload_gets_defaults(task: Task) -> None:
    data = task.validate_payload({"prompt": "fix the tests"})
    assert data["prompt"] == "fix the tests"
    assert data["workspace"] == {"kind": "empty"}
    assert data["allowed_tools"] == [] and data["env"] == []
    assert data["timeout"] == 1800.0


def test_full_payload_round_trips(task: Task) -> None:
    payload = {
        "prompt": "refactor",
        "append_system_prompt": "Be brief.",
        "model": "claude-sonnet-4-5-20250929",
        "max_turns": 5,
        "max_budget_usd": 1.5,
        "allowed_tools": ["Read", "Bash(git log:*)"],
        "disallowed_tools": ["WebFetch"],
        "permission_mode": "acceptEdits",
        "workspace": {"kind": "git", "url": "https://github.com/org/repo.git", "ref": "v1.2.3"},
        "env": ["GH_TOKEN"],
        "timeout": 600,
    }
    data = task.validate_payload(payload)
    assert ClaudeCodePayload.model_validate(data) == ClaudeCodePayload.model_validate(payload)


@pytest.mark.parametrize(
    "workspace",
    [
        {"kind": "empty"},
        {"kind": "git", "url": "git@github.com:org/repo.git"},
        {"kind": "git", "url": "ssh://git@host/org/repo", "ref": "0123abcd"},
        {"kind": "path", "path": "projects/app"},
        {"kind": "path", "path": "./app"},
    ],
)
def test_workspace_sources(task: Task, workspace: dict[str, Any]) -> None:
    assert (
        task.validate_payload({"prompt": "x", "workspace": workspace})["workspace"]["kind"]
        == workspace["kind"]
    )


# ---- rejected, with a specific reason ------------------------------------------------------


def test_unknown_fields_rejected(task: Task) -> None:
    reject(task, {"prompt": "x", "promt": "typo"}, "promt", "Extra inputs are not permitted")
    reject(task, {"prompt": "x", "workspace": {"kind": "empty", "dir": "/"}}, "workspace.empty.dir")
    reject(task, {"prompt": "x", "workspace": {"kind": "git", "url": "https://h/r", "depth": 1}}, "depth")


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"prompt": "a\x00b"}, "prompt"),
        ({"prompt": "x", "append_system_prompt": "\x00"}, "append_system_prompt"),
        ({"prompt": "x", "model": "opus\x00"}, "model"),
        ({"prompt": "x", "allowed_tools": ["Read", "Bash\x00"]}, "allowed_tools.1"),
        ({"prompt": "x", "workspace": {"kind": "path", "path": "a\x00b"}}, "workspace.path.path"),
        ({"prompt": "x", "workspace": {"kind": "git", "url": "https://h/r\x00"}}, "workspace.git.url"),
        ({"prompt": "x", "env": ["A\x00"]}, "env.0"),
    ],
)
def test_nul_bytes_rejected(task: Task, payload: dict[str, Any], where: str) -> None:
    reject(task, payload, where, "NUL byte")


def test_oversize_prompt_rejected(task: Task) -> None:
    reject(task, {"prompt": "x" * (MAX_PROMPT_BYTES + 1)}, "prompt", f"the limit is {MAX_PROMPT_BYTES}")
    # The limit is in UTF-8 bytes, not characters.
    reject(task, {"prompt": "é" * (MAX_PROMPT_BYTES // 2 + 1)}, "prompt", "bytes (UTF-8)")
    assert task.validate_payload({"prompt": "x" * MAX_PROMPT_BYTES})


def test_empty_prompt_rejected(task: Task) -> None:
    reject(task, {"prompt": ""}, "prompt")
    reject(task, {}, "prompt", "Field required")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../etc", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "relative to the worker's path root"),
        ("", "non-empty"),
    ],
)
def test_path_escaping_the_root_rejected(task: Task, path: str, why: str) -> None:
    reject(task, {"prompt": "x", "workspace": {"kind": "path", "path": path}}, "workspace.path.path", why)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ({"kind": "git", "url": "ext::sh -c touch% /tmp/pwned"}, "whitespace"),
        ({"kind": "git", "url": "ext::sh"}, "must be a URL"),
        ({"kind": "git", "url": "gopher://h/r"}, "scheme 'gopher'"),
        ({"kind": "git", "url": "/srv/repo"}, "must be a URL"),
        ({"kind": "git", "url": "-uhttps://h/r"}, "must not start with '-'"),
        ({"kind": "git", "url": "https:///nohost"}, "has no host"),
        ({"kind": "git", "url": "https://h/r", "ref": "--upload-pack=touch"}, "must not start with '-'"),
        ({"kind": "git", "url": "https://h/r", "ref": "a..b"}, "not a valid git ref"),
        ({"kind": "svn", "url": "https://h/r"}, "does not match any of the expected tags"),
    ],
)
def test_bad_git_sources_rejected(task: Task, source: dict[str, Any], why: str) -> None:
    reject(task, {"prompt": "x", "workspace": source}, why)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"env": ["1ABC"]}, "not an environment variable name"),
        ({"env": ["HOME"]}, "set by the sandbox"),
        ({"env": ["LD_PRELOAD"]}, "set by the sandbox"),
        ({"permission_mode": "yolo"}, "permission_mode"),
        ({"model": "-x"}, "model alias or id"),
        ({"allowed_tools": ["--dangerously-skip-permissions"]}, "must not start with '-'"),
        ({"allowed_tools": ["Read\nWrite"]}, "single line"),
        ({"max_turns": 0}, "max_turns"),
        ({"max_budget_usd": 0}, "max_budget_usd"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 10 * 86400}, "timeout"),
    ],
)
def test_other_bad_fields_rejected(task: Task, payload: dict[str, Any], why: str) -> None:
    reject(task, {"prompt": "x", **payload}, why)


# ---- argv ----------------------------------------------------------------------------------


def test_argv_minimal() -> None:
    argv = build_argv("/usr/bin/claude", ClaudeCodePayload(prompt="secret prompt"))
    assert argv == ["/usr/bin/claude", "-p", "--output-format", "stream-json", "--verbose"]


def test_argv_carries_every_flag_but_never_the_prompt() -> None:
    payload = ClaudeCodePayload.model_validate(
        {
            "prompt": "the secret prompt",
            "append_system_prompt": "Be brief.",
            "model": "opus",
            "max_turns": 7,
            "max_budget_usd": 2.5,
            "allowed_tools": ["Read", "Bash(git log:*)"],
            "disallowed_tools": ["WebFetch"],
            "permission_mode": "plan",
        }
    )
    argv = build_argv("claude", payload)
    assert argv[:5] == ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    pairs = {
        "--model": "opus",
        "--max-turns": "7",
        "--max-budget-usd": "2.5",
        "--append-system-prompt": "Be brief.",
        "--permission-mode": "plan",
    }
    for flag, value in pairs.items():
        assert argv[argv.index(flag) + 1] == value
    i = argv.index("--allowedTools")
    assert argv[i + 1 : i + 3] == ["Read", "Bash(git log:*)"]
    assert argv[argv.index("--disallowedTools") + 1] == "WebFetch"
    assert not any("secret" in a for a in argv)


@pytest.mark.parametrize(
    ("amount", "text"), [(1.0, "1"), (0.05, "0.05"), (1e-05, "0.00001"), (12.3456789, "12.345679")]
)
def test_budget_is_a_plain_decimal(amount: float, text: str) -> None:
    assert format_usd(amount) == text


# ---- the processor interface ----------------------------------------------------------------


def test_claude_code_is_a_processor_and_registers_as_a_task(task: Task) -> None:
    assert PROCESSOR is claude_code
    assert isinstance(claude_code, Processor)
    assert claude_code.name == "claude_code" and claude_code.Payload is ClaudeCodePayload
    assert task.name == "claude_code"
    assert task.payload_model is ClaudeCodePayload
    assert task.max_attempts == 3 and task.timeout == 600


class EchoPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class EchoProcessor:
    """The smallest processor: what another task type would write."""

    name = "echo"
    Payload = EchoPayload

    async def run(self, ctx: JobContext, payload: EchoPayload) -> dict[str, Any]:
        await ctx.progress({"echoing": payload.text})
        return {"text": payload.text, "job": ctx.job_id}


async def test_register_wires_payload_model_and_run() -> None:
    tasks = TaskSet()
    t = register(tasks, EchoProcessor(), name="echo2", max_attempts=1)
    assert tasks.get("echo2") is t and t.max_attempts == 1
    progress: list[dict[str, Any]] = []

    async def on_progress(data: dict[str, Any]) -> None:
        progress.append(data)

    async def on_log(events: list[dict[str, Any]]) -> None:
        return None

    ctx = JobContext("j1", "q", "echo2", 1, 1, "w", {}, on_progress, on_log)
    payload = t.parse_payload(t.validate_payload({"text": "hi"}))
    assert await t.fn(ctx, payload) == {"text": "hi", "job": "j1"}
    assert progress == [{"echoing": "hi"}]
    with pytest.raises(InvalidInput, match="extra"):
        t.validate_payload({"text": "hi", "extra": 1})
