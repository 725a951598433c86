"""The claude_code processor driving a fake `claude` (tests/fakes/claude) through a real
JobContext: argv and stdin, environment, workspace lifecycle, every failure class, output
floods, resource limits, and killing everything a run started."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from herder.errors import PermanentError, RetryableError
from herder.processors.claude_code import ClaudeCodePayload, ClaudeCodeProcessor, ClaudeCodeSettings
from herder.processors.claude_code.sandbox import KEPT_SUFFIX, MARKER_ENV
from herder.tasks import JobContext

FAKE = Path(__file__).parent / "fakes" / "claude"
IS_ROOT = os.geteuid() == 0
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
RUN_UID = 65534


def _python_for_child() -> bool:
    # The fake is `#!/usr/bin/env python3`; as root the child runs as nobody, who must be able
    # to execute a python3 on the child's PATH (pyenv under /root is not readable to it).
    if not IS_ROOT:
        return True
    return any(os.access(f"{d}/python3", os.X_OK) for d in SYSTEM_PATH.split(":"))


pytestmark = pytest.mark.skipif(
    not _python_for_child(),
    reason="no python3 on /usr/local/bin:/usr/bin:/bin for the fake CLI to run as nobody",
)


# ---- harness -----------------------------------------------------------------------------


@dataclass
class Recorder:
    """What a job would publish: progress snapshots and event-log batches."""

    progress: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    log_calls: int = 0

    async def on_progress(self, data: dict[str, Any]) -> None:
        self.progress.append(json.loads(json.dumps(data)))  # what Redis would store

    async def on_log(self, events: list[dict[str, Any]]) -> None:
        self.log_calls += 1
        self.events.extend(events)

    def ctx(self, job_id: str = "job-1", attempt: int = 1) -> JobContext:
        return JobContext(
            job_id=job_id,
            queue="default",
            task="claude_code",
            attempt=attempt,
            max_attempts=3,
            worker_id="test-worker",
            state={},
            _progress=self.on_progress,
            _log=self.on_log,
        )

    def reported_pids(self) -> list[int]:
        for e in self.events:
            if e.get("type") == "user":
                for block in e["message"]["content"]:
                    m = re.match(r"pids: ([\d ]+)", str(block.get("content")))
                    if m:
                        return [int(p) for p in m.group(1).split()]
        return []


@pytest.fixture
def fake_bin(shared_dir: Path) -> Path:
    bindir = shared_dir / "bin"
    bindir.mkdir(mode=0o755)
    dst = bindir / "claude"
    shutil.copy(FAKE, dst)
    dst.chmod(0o755)
    return dst


@pytest.fixture(params=["bwrap", "none"], ids=["bwrap", "uid-drop"])
def cc_settings(
    shared_dir: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> ClaudeCodeSettings:
    """Every run-level test runs both in a bwrap sandbox and on the uid-drop fallback."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    monkeypatch.setenv("HERDER_TEST_SECRET", "hunter2")
    path = [str(fake_bin.parent)] + ([] if IS_ROOT else [os.path.dirname(sys.executable)]) + [SYSTEM_PATH]
    return ClaudeCodeSettings(
        bin=str(fake_bin),
        workspace_root=shared_dir / "workspaces",
        child_path=":".join(path),
        kill_grace_seconds=0.5,
        progress_interval_seconds=0.05,
        keep_on_failure_seconds=600,
        rlimit_cpu_seconds=120,
        rlimit_as_bytes=4 << 30,
        sandbox=request.param,
    )


def processor(settings: ClaudeCodeSettings, **changes: Any) -> ClaudeCodeProcessor:
    return ClaudeCodeProcessor(settings.model_copy(update=changes))


def payload(prompt: str, **fields: Any) -> ClaudeCodePayload:
    return ClaudeCodePayload.model_validate({"prompt": prompt, **fields})


def workspaces(settings: ClaudeCodeSettings) -> list[Path]:
    root = settings.workspace_root
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


async def survivors(pids: list[int], wait: float = 10.0) -> list[int]:
    """The pids still alive once the kill had `wait` seconds to land (not a timing assertion:
    SIGKILL is asynchronous, and this only bounds how long the test waits for it)."""
    for _ in range(int(wait / 0.05)):
        if not any(alive(p) for p in pids):
            return []
        await asyncio.sleep(0.05)
    return [p for p in pids if alive(p)]


def marked_processes() -> list[int]:
    """Every live process carrying a run marker: none may be left after a run."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                env = Path(f"/proc/{entry.name}/environ").read_bytes()
            except OSError:
                continue
            if f"{MARKER_ENV}=job-".encode() in env and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


async def all_gone(rec: Recorder, settings: ClaudeCodeSettings) -> None:
    """Every process the run started is gone. In a sandbox the reported pids are the PID
    namespace's own, so there only the marker (in every process's environment) is checked."""
    if settings.sandbox == "none":
        assert await survivors(rec.reported_pids()) == []
    await wait_for(lambda: marked_processes() == [], timeout=10)
    assert marked_processes() == []


async def wait_for(pred: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


# ---- success ------------------------------------------------------------------------------


async def test_success_returns_the_result_and_publishes_progress_and_log(
    cc_settings: ClaudeCodeSettings,
) -> None:
    rec = Recorder()
    result = await processor(cc_settings).run(rec.ctx(), payload("Fix it. FAKE:turns=3 FAKE:sleep=0.3"))
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "Done."
    assert result["num_turns"] == 4
    assert result["total_cost_usd"] == pytest.approx(0.0492)
    assert isinstance(result["duration_ms"], int) and result["usage"]["input_tokens"] > 0
    init = next(e for e in rec.events if e.get("subtype") == "init")
    assert result["session_id"] == init["session_id"]
    # Live progress while running (the fake sleeps after turn 1), then the final summary.
    running = [p for p in rec.progress if p["phase"] == "running"]
    assert any(p["turns"] >= 1 and p["last_tool"] == "Bash" for p in running)
    final = rec.progress[-1]
    assert (
        final["phase"] == "succeeded" and final["cost_usd"] == pytest.approx(0.0492) and final["turns"] == 4
    )
    # Tokens come from the result's usage, not the ~1 output token of each assistant event.
    assert final["output_tokens"] == result["usage"]["output_tokens"] == 320
    assert final["terminal_reason"] == result["terminal_reason"] == "completed"
    assert result["modelUsage"]
    herder = result["herder"]
    assert herder["claude_version"] == "2.1.332 (Claude Code)"
    assert herder["sandbox"] == ("bwrap" if cc_settings.sandbox == "bwrap" else "uid-drop")
    assert herder["first_event_seconds"] > 0
    # The event log holds every stream-json event, in order, ending with the result.
    types = [e["type"] for e in rec.events]
    assert types[0] == "system" and types[-1] == "result" and "user" in types
    assert sum(1 for e in rec.events if e["type"] == "assistant") == 7
    assert workspaces(cc_settings) == []  # removed on success


async def test_argv_stdin_cwd_home_and_identity(cc_settings: ClaudeCodeSettings) -> None:
    prompt = "The secret plan. FAKE:echo"
    p = payload(
        prompt,
        model="opus",
        max_turns=9,
        max_budget_usd=0.75,
        allowed_tools=["Read", "Bash(git log:*)"],
        disallowed_tools=["WebFetch"],
        permission_mode="acceptEdits",
        append_system_prompt="Be brief.",
    )
    echo = json.loads((await processor(cc_settings).run(Recorder().ctx(), p))["result"])
    argv = echo["argv"]
    assert argv[1:5] == ["-p", "--output-format", "stream-json", "--verbose"]
    for flag, value in [
        ("--model", "opus"),
        ("--max-turns", "9"),
        ("--max-budget-usd", "0.75"),
        ("--permission-mode", "acceptEdits"),
        ("--append-system-prompt", "Be brief."),
    ]:
        assert argv[argv.index(flag) + 1] == value
    assert echo["allowed"] == ["Read", "Bash(git log:*)"] and echo["disallowed"] == ["WebFetch"]
    assert echo["prompt"] == prompt  # on stdin...
    assert not any("secret" in a for a in argv)  # ...never on argv
    root = str(cc_settings.workspace_root.resolve())
    assert echo["cwd"].startswith(root) and echo["cwd"].endswith("/work")
    assert echo["home"].startswith(root) and echo["home"].endswith("/home")
    assert echo["tmpdir"].startswith(root)
    assert echo["uid"] == (RUN_UID if IS_ROOT else os.getuid())


async def test_cli_found_on_path(
    cc_settings: ClaudeCodeSettings, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{fake_bin.parent}:{os.environ['PATH']}")
    result = await processor(cc_settings, bin="claude").run(Recorder().ctx(), payload("hi FAKE:turns=1"))
    assert result["subtype"] == "success"


# ---- environment ------------------------------------------------------------------------------


async def test_only_allow_listed_environment_reaches_the_child(cc_settings: ClaudeCodeSettings) -> None:
    result = await processor(cc_settings).run(Recorder().ctx(), payload("FAKE:echo"))
    env = set(json.loads(result["result"])["env"])
    assert "HERDER_TEST_SECRET" not in env
    assert "ANTHROPIC_API_KEY" in env  # passed by name
    allowed = {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "LC_CTYPE",
        MARKER_ENV,
        "ANTHROPIC_API_KEY",
        "DISABLE_AUTOUPDATER",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "PWD",  # bwrap --chdir sets it: the cwd, nothing new
        "CLAUDE_CODE_MAX_RETRIES",
        "CLAUDE_CODE_STARTUP_FAILURE_RESULTS",
    }
    assert env <= allowed, env - allowed
    assert {"CLAUDE_CODE_MAX_RETRIES", "CLAUDE_CODE_STARTUP_FAILURE_RESULTS"} <= env

    result = await processor(cc_settings).run(Recorder().ctx(), payload("FAKE:read_env=HERDER_TEST_SECRET"))
    assert "read_env HERDER_TEST_SECRET: unset" in result["result"]


async def test_a_payload_cannot_ask_for_a_variable_outside_the_allow_list(
    cc_settings: ClaudeCodeSettings,
) -> None:
    with pytest.raises(PermanentError, match="HERDER_TEST_SECRET not in this worker's allow-list"):
        await processor(cc_settings).run(Recorder().ctx(), payload("x", env=["HERDER_TEST_SECRET"]))
    assert workspaces(cc_settings) == []  # refused before anything was created

    allowing = processor(cc_settings, env_allowlist=["HERDER_TEST_SECRET"])
    result = await allowing.run(
        Recorder().ctx(), payload("FAKE:read_env=HERDER_TEST_SECRET", env=["HERDER_TEST_SECRET"])
    )
    assert "read_env HERDER_TEST_SECRET: visible" in result["result"]


async def test_missing_api_key_is_a_permanent_auth_failure(
    cc_settings: ClaudeCodeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(
        PermanentError, match=r"authentication_failed.*Not logged in.*hint: set ANTHROPIC_API_KEY"
    ):
        await processor(cc_settings).run(Recorder().ctx(), payload("hi"))


# ---- workspace lifecycle ---------------------------------------------------------------------


async def test_workspace_kept_on_failure_then_swept(cc_settings: ClaudeCodeSettings) -> None:
    with pytest.raises(PermanentError, match="workspace kept 600 s at") as info:
        await processor(cc_settings).run(Recorder().ctx(), payload("FAKE:write_file=notes.txt FAKE:is_error"))
    [kept] = workspaces(cc_settings)
    assert str(kept) in str(info.value)
    assert (kept / "work" / "notes.txt").read_text() == "left behind\n"
    marker = kept.with_name(kept.name + KEPT_SUFFIX)
    assert marker.exists()

    # A run while it is fresh leaves it alone; once it is older than the keep time, the next
    # run on this worker sweeps it (the marker's mtime is the failure time).
    await processor(cc_settings).run(Recorder().ctx(), payload("FAKE:turns=1"))
    assert workspaces(cc_settings) == [kept]
    os.utime(marker, (marker.stat().st_mtime - 601,) * 2)
    await processor(cc_settings).run(Recorder().ctx(), payload("FAKE:turns=1"))
    assert workspaces(cc_settings) == []
    assert list(cc_settings.workspace_root.iterdir()) == []


async def test_workspace_removed_on_failure_when_keeping_is_off(cc_settings: ClaudeCodeSettings) -> None:
    with pytest.raises(PermanentError) as info:
        await processor(cc_settings, keep_on_failure_seconds=0).run(
            Recorder().ctx(), payload("FAKE:is_error")
        )
    assert "workspace kept" not in str(info.value)
    assert workspaces(cc_settings) == []


async def test_a_run_that_ends_over_its_disk_cap_between_two_checks_fails(
    cc_settings: ClaudeCodeSettings,
) -> None:
    # The watchdog polls; with a poll that never comes (as under load) the end-of-run check decides.
    with pytest.raises(PermanentError, match="disk cap"):
        await processor(
            cc_settings, workspace_max_bytes=4, disk_check_interval_seconds=3600, keep_on_failure_seconds=0
        ).run(Recorder().ctx(), payload("FAKE:turns=1 FAKE:write_file=big.txt"))


# ---- failure classes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "fields", "error", "reason"),
    [
        # transient: retried with the task's backoff
        ("FAKE:rate_limit", {}, RetryableError, r"transient.*rate_limit"),
        ("FAKE:overloaded", {}, RetryableError, r"transient.*overloaded"),
        ("FAKE:network", {}, RetryableError, r"transient.*connection_failed"),
        # permanent: straight to the DLQ with the reason
        ("FAKE:auth", {}, PermanentError, r"authentication_failed.*Invalid API key"),
        ("FAKE:billing", {}, PermanentError, r"billing_error"),
        ("FAKE:bad_args", {}, PermanentError, r"invalid arguments: error: unknown option"),
        ("FAKE:max_turns", {}, PermanentError, r"max turns reached \(error_max_turns\)"),
        ("FAKE:turns=5", {"max_turns": 2}, PermanentError, r"error_max_turns"),
        ("FAKE:budget", {"max_budget_usd": 0.5}, PermanentError, r"max budget \(USD\) exhausted"),
        ("FAKE:is_error", {}, PermanentError, r"run ended in error.*Something went wrong"),
        ("FAKE:during_execution", {}, PermanentError, r"error_during_execution.*Tool execution failed"),
        # crash of the CLI: retried
        ("FAKE:crash", {}, RetryableError, r"crash: CLI killed by SIGSEGV"),
        ("FAKE:exit=3", {}, RetryableError, r"crash: CLI exited with status 3 without a result"),
    ],
)
async def test_failure_classes(
    cc_settings: ClaudeCodeSettings, prompt: str, fields: dict[str, Any], error: type[Exception], reason: str
) -> None:
    rec = Recorder()
    with pytest.raises(error, match=reason):
        await processor(cc_settings, keep_on_failure_seconds=0).run(rec.ctx(), payload(prompt, **fields))
    final = rec.progress[-1]
    assert final["phase"] == "failed" and final["failure"] in ("transient", "permanent", "crash")
    assert workspaces(cc_settings) == []


async def test_missing_cli_is_retryable(cc_settings: ClaudeCodeSettings, shared_dir: Path) -> None:
    with pytest.raises(RetryableError, match="not found"):
        await processor(cc_settings, bin=str(shared_dir / "nope")).run(Recorder().ctx(), payload("x"))
    with pytest.raises(RetryableError, match="not found on this worker's PATH"):
        await processor(cc_settings, bin="no-such-claude-binary").run(Recorder().ctx(), payload("x"))


# ---- no orphans, ever ------------------------------------------------------------------------


async def test_grandchildren_killed_after_a_normal_exit(cc_settings: ClaudeCodeSettings) -> None:
    rec = Recorder()
    result = await processor(cc_settings).run(rec.ctx(), payload("FAKE:grandchild FAKE:turns=1"))
    assert result["subtype"] == "success"
    pids = rec.reported_pids()
    assert len(pids) == 3  # the CLI, a SIGTERM-ignoring child, a setsid'd daemon
    await all_gone(rec, cc_settings)


async def test_cancel_kills_the_whole_group_and_escapees(cc_settings: ClaudeCodeSettings) -> None:
    rec = Recorder()
    p = payload("FAKE:grandchild FAKE:ignore_term FAKE:sleep=120")
    task = asyncio.create_task(processor(cc_settings).run(rec.ctx(), p))
    await wait_for(lambda: len(rec.reported_pids()) == 3)
    assert len(marked_processes()) >= 3
    task.cancel()  # what the worker does on cancel and at the drain deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    await all_gone(rec, cc_settings)
    assert len(workspaces(cc_settings)) == 1  # kept for debugging, like any unfinished run


async def test_worker_timeout_kills_the_whole_group(cc_settings: ClaudeCodeSettings) -> None:
    rec = Recorder()
    run = processor(cc_settings).run(rec.ctx(), payload("FAKE:grandchild FAKE:ignore_term FAKE:sleep=120"))

    async def wait_then_time_out() -> None:
        async with asyncio.timeout(60) as cm:  # how the worker applies a task's timeout
            task = asyncio.ensure_future(run)
            await wait_for(lambda: len(rec.reported_pids()) == 3)
            cm.reschedule(asyncio.get_running_loop().time())
            await task

    with pytest.raises(TimeoutError):
        await wait_then_time_out()
    await all_gone(rec, cc_settings)


async def test_payload_timeout_kills_the_group_and_fails_permanently(cc_settings: ClaudeCodeSettings) -> None:
    rec = Recorder()
    with pytest.raises(PermanentError, match=r"timed out after 3 s"):
        await processor(cc_settings).run(rec.ctx(), payload("FAKE:grandchild FAKE:sleep=120", timeout=3))
    assert len(rec.reported_pids()) == 3
    await all_gone(rec, cc_settings)
    final = rec.progress[-1]  # the progress made before the deadline is kept
    assert final["phase"] == "failed" and final["turns"] >= 1 and final["session_id"]


async def test_a_timeout_names_the_last_api_error(cc_settings: ClaudeCodeSettings) -> None:
    rec = Recorder()
    with pytest.raises(PermanentError, match=r"timed out after 6 s.*last API error: unknown"):
        await processor(cc_settings).run(rec.ctx(), payload("FAKE:retry_forever", timeout=6))
    assert rec.progress[-1]["api_retries"] >= 1 and rec.progress[-1]["last_error"] == "unknown"


def test_claude_code_backs_off_slower_than_the_default() -> None:
    from herder.processors import register
    from herder.tasks import TaskSet

    task = register(TaskSet(), ClaudeCodeProcessor())
    assert task.backoff.base_seconds == 30 and task.backoff.max_seconds == 900


# ---- bad children do not disturb their neighbours ----------------------------------------------


async def test_flood_is_capped_and_a_concurrent_run_is_unaffected(cc_settings: ClaudeCodeSettings) -> None:
    capped = processor(cc_settings, max_output_bytes=4 << 20, max_line_bytes=1 << 20, max_log_bytes=256 << 10)
    flood_rec, calm_rec = Recorder(), Recorder()
    flood, calm = await asyncio.gather(
        capped.run(flood_rec.ctx("job-flood"), payload("FAKE:flood=50MB FAKE:turns=1")),
        capped.run(calm_rec.ctx("job-calm"), payload("FAKE:turns=3 FAKE:sleep=0.5")),
    )
    assert flood["subtype"] == "success"  # the result line is still found after the flood
    assert calm["subtype"] == "success" and calm["num_turns"] == 4
    final = flood_rec.progress[-1]
    assert final["stdout_bytes"] > 50 << 20
    assert final["dropped_bytes"] > 45 << 20
    logged = sum(len(json.dumps(e)) for e in flood_rec.events)
    assert logged < (256 << 10) * 1.2
    assert any(e.get("subtype") == "log_truncated" for e in flood_rec.events)
    assert sum(1 for e in flood_rec.events if e.get("subtype") == "non_json_line") <= 20


async def test_out_of_memory_under_rlimit_is_a_crash_not_a_worker_crash(
    cc_settings: ClaudeCodeSettings,
) -> None:
    limited = processor(cc_settings, rlimit_as_bytes=512 << 20)
    rec = Recorder()
    results: tuple[dict[str, Any] | BaseException, ...] = await asyncio.gather(
        limited.run(rec.ctx("job-oom"), payload("FAKE:oom FAKE:turns=1")),
        limited.run(Recorder().ctx("job-calm"), payload("FAKE:turns=2 FAKE:sleep=0.3")),
        return_exceptions=True,
    )
    oom, calm = results
    assert isinstance(oom, RetryableError), oom
    assert "out of memory" in str(oom) and "SIGABRT" in str(oom)
    [stderr] = [e for e in rec.events if e.get("subtype") == "stderr"]  # kept in the job's log
    assert "heap out of memory" in stderr["tail"] and stderr["returncode"] == -6
    assert isinstance(calm, dict) and calm["subtype"] == "success"


async def test_cpu_rlimit_ends_the_run_as_a_crash(cc_settings: ClaudeCodeSettings) -> None:
    with pytest.raises(RetryableError, match=r"SIGXCPU \(CPU time limit reached\)"):
        await processor(cc_settings, rlimit_cpu_seconds=1).run(
            Recorder().ctx(), payload("FAKE:cpu FAKE:turns=1")
        )


async def test_crashing_neighbours_do_not_disturb_a_run(cc_settings: ClaudeCodeSettings) -> None:
    proc = processor(cc_settings, keep_on_failure_seconds=0)
    results: tuple[dict[str, Any] | BaseException, ...] = await asyncio.gather(
        proc.run(Recorder().ctx("job-crash"), payload("FAKE:crash")),
        proc.run(Recorder().ctx("job-exit"), payload("FAKE:exit=9")),
        proc.run(Recorder().ctx("job-calm"), payload("FAKE:turns=3 FAKE:sleep=0.3")),
        return_exceptions=True,
    )
    crash, exited, calm = results
    assert isinstance(crash, RetryableError) and isinstance(exited, RetryableError)
    assert isinstance(calm, dict) and calm["num_turns"] == 4


@pytest.mark.skipif(not IS_ROOT, reason="the uid drop (to 65534) only happens when the worker runs as root")
async def test_writing_outside_the_workspace_is_blocked(
    cc_settings: ClaudeCodeSettings, shared_dir: Path
) -> None:
    outside = shared_dir / "root-owned"
    outside.mkdir(mode=0o755)  # world-readable, writable only by root
    target = outside / "escape.txt"
    result = await processor(cc_settings).run(Recorder().ctx(), payload(f"FAKE:write_outside={target}"))
    # Sandboxed, the directory is not even there; on the fallback the uid drop denies it.
    assert re.search(r"write_outside: denied \((PermissionError|FileNotFoundError)\)", result["result"])
    assert not target.exists()


# ---- workspace sources -------------------------------------------------------------------------


@pytest.fixture
def path_root(shared_dir: Path) -> Path:
    root = shared_dir / "projects"
    (root / "app" / "src").mkdir(parents=True)
    (root / "app" / "README.md").write_text("hello\n")
    (root / "app" / "src" / "main.py").write_text("print(1)\n")
    (root / "escape").symlink_to("/etc")
    return root


async def test_path_source_is_copied_and_the_original_left_alone(
    cc_settings: ClaudeCodeSettings, path_root: Path
) -> None:
    proc = processor(cc_settings, path_root=path_root)
    p = payload("FAKE:echo FAKE:write_file=new.txt", workspace={"kind": "path", "path": "app"})
    echo = json.loads((await proc.run(Recorder().ctx(), p))["result"])
    assert echo["files"] == ["README.md", "new.txt", "src"]  # a copy, with the run's own file in it
    assert not (path_root / "app" / "new.txt").exists()  # the original is untouched


async def test_a_repositorys_own_hooks_do_not_run_unless_asked(
    cc_settings: ClaudeCodeSettings, path_root: Path
) -> None:
    hooked = path_root / "hooked"
    (hooked / ".claude").mkdir(parents=True)
    hook = {"hooks": {"SessionStart": [{"hooks": [{"type": "command", "command": "touch hook-ran"}]}]}}
    (hooked / ".claude" / "settings.json").write_text(json.dumps(hook))
    proc = processor(cc_settings, path_root=path_root)
    source = {"kind": "path", "path": "hooked"}
    echo = json.loads((await proc.run(Recorder().ctx(), payload("FAKE:echo", workspace=source)))["result"])
    assert "hook-ran" not in echo["files"]
    assert echo["argv"][echo["argv"].index("--setting-sources") + 1] == "user"
    # A tenant that trusts its repository may ask for its settings, where the worker allows it.
    trusting = payload("FAKE:echo", workspace=source, setting_sources=["user", "project"])
    echo = json.loads((await proc.run(Recorder().ctx(), trusting))["result"])
    assert "hook-ran" in echo["files"]
    strict = processor(cc_settings, path_root=path_root, allowed_setting_sources=["user"])
    with pytest.raises(PermanentError, match=r"setting source.*project not allowed"):
        await strict.run(Recorder().ctx(), trusting)


async def test_path_source_escaping_the_root_at_run_time_is_permanent(
    cc_settings: ClaudeCodeSettings, path_root: Path
) -> None:
    proc = processor(cc_settings, path_root=path_root)
    with pytest.raises(PermanentError, match="resolves outside the path root"):
        await proc.run(Recorder().ctx(), payload("x", workspace={"kind": "path", "path": "escape"}))
    with pytest.raises(PermanentError, match="does not exist"):
        await proc.run(Recorder().ctx(), payload("x", workspace={"kind": "path", "path": "missing"}))
    with pytest.raises(PermanentError, match="HERDER_CLAUDE_PATH_ROOT is unset"):
        await processor(cc_settings).run(
            Recorder().ctx(), payload("x", workspace={"kind": "path", "path": "app"})
        )


@pytest.fixture
def git_repo(shared_dir: Path) -> Path:
    repo = shared_dir / "repo"
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    (repo / "hello.txt").write_text("hi\n")
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "init"], ["tag", "v1"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True, env=env)
    if IS_ROOT:  # git refuses to serve a repository owned by another user
        subprocess.run(["chown", "-R", f"{RUN_UID}:{RUN_UID}", str(repo)], check=True)
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
async def test_git_source_is_fetched_into_the_workspace(
    cc_settings: ClaudeCodeSettings, git_repo: Path
) -> None:
    proc = processor(cc_settings, git_allowed_schemes=["file"])
    for ref in (None, "main", "v1"):
        p = payload("FAKE:echo", workspace={"kind": "git", "url": f"file://{git_repo}", "ref": ref})
        echo = json.loads((await proc.run(Recorder().ctx(), p))["result"])
        assert echo["files"] == [".git", "hello.txt"]
    with pytest.raises(PermanentError, match="git fetch failed"):
        await proc.run(
            Recorder().ctx(),
            payload("x", workspace={"kind": "git", "url": f"file://{git_repo}", "ref": "nope"}),
        )


async def test_git_scheme_must_be_enabled_on_the_worker(cc_settings: ClaudeCodeSettings) -> None:
    with pytest.raises(PermanentError, match="git scheme 'file' is not enabled"):
        await processor(cc_settings).run(
            Recorder().ctx(), payload("x", workspace={"kind": "git", "url": "file:///srv/r"})
        )


# ---- lifecycle: nothing a sink does can hold a finished run's slot --------------------------


async def test_a_progress_sink_that_swallows_cancellation_cannot_hold_the_slot(
    cc_settings: ClaudeCodeSettings,
) -> None:
    """redis-py with a socket timeout can swallow a CancelledError that lands mid-call; a publish
    loop stopped only by cancel() then runs for ever and the job keeps its slot."""
    swallow = True
    calls = 0

    async def stubborn(_data: Any) -> None:
        nonlocal calls
        calls += 1
        while True:
            try:
                await asyncio.sleep(0.2)
                return
            except asyncio.CancelledError:
                if not swallow:
                    raise

    ctx = JobContext(
        job_id="job-stubborn",
        queue="default",
        task="claude_code",
        attempt=1,
        max_attempts=3,
        worker_id="test-worker",
        state={},
        _progress=stubborn,
        _log=stubborn,
    )
    run = asyncio.create_task(processor(cc_settings, stop_bound_seconds=2).run(ctx, payload("FAKE:turns=3")))
    # A generous bound on a hang, not a timing assertion: the run needs well under a second.
    done, _ = await asyncio.wait({run}, timeout=60)
    if not done:
        swallow = False
        run.cancel()
        await asyncio.wait({run}, timeout=10)
        raise AssertionError("the run never returned: its progress loop outlived the CLI")
    assert run.result()["subtype"] == "success"
    assert calls > 0
