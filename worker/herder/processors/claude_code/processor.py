"""The `claude_code` processor: one headless Claude Code run in a fresh, sandboxed workspace."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from herder.backoff import Backoff
from herder.errors import PermanentError, RetryableError
from herder.logs import get_logger
from herder.processors.claude_code.bwrap import Isolation, Probe, probe
from herder.processors.claude_code.classify import Verdict, classify
from herder.processors.claude_code.command import build_argv
from herder.processors.claude_code.payload import ClaudeCodePayload
from herder.processors.claude_code.result import ClaudeCodeResult
from herder.processors.claude_code.runner import RunOutcome, bounded, run_cli
from herder.processors.claude_code.sandbox import (
    Limits,
    RunAs,
    Workspace,
    build_env,
    check_env_names,
    create_workspace,
    first_untraversable,
    keep_workspace,
    new_marker,
    protect_worker_process,
    remove_workspace,
    spawn,
    sweep_kept,
    writable_by_others,
)
from herder.processors.claude_code.settings import ClaudeCodeSettings
from herder.processors.claude_code.sources import materialize
from herder.processors.claude_code.stream import Summary
from herder.tasks import JobContext

log = get_logger(__name__)


def resolve_binary(name: str) -> str:
    """The CLI's absolute path. A worker without it is misconfigured, which is no fault of the
    job: RetryableError, so another worker (or this one, fixed) can take it."""
    if os.sep in name:
        path = Path(name)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.absolute())
        raise RetryableError(f"Claude Code CLI not found or not executable at {name!r} (HERDER_CLAUDE_BIN)")
    found = shutil.which(name)
    if found is None:
        raise RetryableError(
            f"Claude Code CLI {name!r} not found on this worker's PATH (set HERDER_CLAUDE_BIN)"
        )
    return str(Path(found).absolute())


class ClaudeCodeProcessor:
    """Runs `claude -p --output-format stream-json --verbose` for a `ClaudeCodePayload`.

    Returns the CLI's final `result` object (result, is_error, subtype, num_turns, duration_ms,
    total_cost_usd, usage, session_id, ...). Raises PermanentError for failures a retry cannot
    fix (authentication, invalid arguments, max turns/budget/timeout, a result with is_error)
    and RetryableError for transient API failures and crashes of the CLI.
    """

    name = "claude_code"
    Payload = ClaudeCodePayload
    # Task defaults for `register`: API trouble clears in minutes, not seconds, and each retry
    # of a run costs money; back off from 30 s up to 15 min.
    task_defaults: dict[str, Any] = {"backoff": Backoff(base_seconds=30, factor=3, max_seconds=900)}
    Result = ClaudeCodeResult

    def __init__(self, settings: ClaudeCodeSettings | None = None) -> None:
        self._settings = settings
        self._protected = False
        self._checked_roots: set[Path] = set()
        self._probe: Probe | None = None
        self._versions: dict[str, str] = {}

    @property
    def settings(self) -> ClaudeCodeSettings:
        # Read from the environment on first use, on the worker, not at import time.
        if self._settings is None:
            self._settings = ClaudeCodeSettings()
        return self._settings

    async def run(self, ctx: JobContext, payload: ClaudeCodePayload) -> dict[str, Any]:
        s = self.settings
        check_env_names(s, payload.env)
        refused = sorted(set(payload.setting_sources or []) - set(s.allowed_setting_sources))
        if refused:
            raise PermanentError(
                f"setting source(s) {', '.join(refused)} not allowed on this worker "
                "(HERDER_CLAUDE_ALLOWED_SETTING_SOURCES)"
            )
        binary = resolve_binary(s.bin)
        run_as = RunAs.for_worker(s)
        if not run_as.drops and s.protect_worker and not self._protected:
            self._protected = protect_worker_process()
        found = await self.probe_sandbox(run_as)
        await asyncio.to_thread(
            sweep_kept,
            s.workspace_root,
            s.keep_on_failure_seconds,
            max_count=s.keep_max_count,
            max_bytes=s.keep_max_bytes,
        )
        ws = await asyncio.to_thread(create_workspace, s.workspace_root, ctx.job_id, ctx.attempt, run_as)
        self._check_reachable(ws, run_as)
        succeeded = False
        try:
            await _publish(
                ctx, {"phase": "preparing", "workspace": payload.workspace.kind, "sandbox": found.mode}, s
            )
            isolation = None
            if found.sandboxed:
                assert found.bwrap is not None
                isolation = Isolation(found.bwrap, ws.path, tuple(s.sandbox_ro_binds), s.sandbox_share_net)
            marker = new_marker(ctx.job_id, ctx.attempt)
            version = await self.cli_version(binary, run_as)
            live: list[Summary] = []
            env = build_env(s, payload.env, ws.home, ws.tmp, marker)
            try:
                async with asyncio.timeout(payload.timeout) as deadline:
                    await materialize(payload.workspace, ws, s, run_as, env)
                    outcome = await run_cli(
                        build_argv(binary, payload, s.setting_sources),
                        prompt=payload.prompt,
                        cwd=ws.work,
                        env=env,
                        run_as=run_as,
                        limits=Limits.from_settings(s),
                        ctx=ctx,
                        settings=s,
                        isolation=isolation,
                        workspace=ws.path,
                        live=live,
                    )
            except TimeoutError:
                if not deadline.expired():
                    raise
                reason = f"timed out after {payload.timeout:g} s (the payload's timeout)"
                so_far = live[-1] if live else None
                if so_far is not None and so_far.errors:
                    status = f", HTTP {so_far.last_error_status}" if so_far.last_error_status else ""
                    reason += f"; last API error: {so_far.errors[-1]}{status}"
                await _report(ctx, Verdict("permanent", reason), None, s, so_far)
                raise PermanentError(reason + self._kept_note(ws)) from None
            if outcome.stats.disk_cap_exceeded:
                reason = (
                    f"the workspace grew past its disk cap ({s.workspace_max_bytes} bytes; "
                    f"{outcome.stats.disk_cap_exceeded} used); the run fails"
                )
                await _report(ctx, Verdict("permanent", reason), outcome, s)
                raise PermanentError(reason + self._kept_note(ws))
            verdict = classify(
                outcome.returncode,
                outcome.result,
                outcome.stderr_tail,
                outcome.summary.errors,
                outcome.summary.last_error_status,
            )
            await _report(ctx, verdict, outcome, s)
            if verdict.kind == "ok":
                succeeded = True
                assert outcome.result is not None
                first = outcome.first_event_seconds
                herder = {
                    "claude_version": version,
                    "sandbox": found.mode,
                    "first_event_seconds": None if first is None else round(first, 4),
                }
                return {**outcome.result, "herder": herder}
            if verdict.kind == "permanent" and "authentication_failed" in verdict.reason:
                verdict = Verdict(verdict.kind, verdict.reason + NO_KEY_HINT)
            log.info("claude_code run failed", job=ctx.job_id, kind=verdict.kind, reason=verdict.reason)
            if verdict.kind == "permanent":
                raise PermanentError(verdict.reason + self._kept_note(ws))
            raise RetryableError(f"{verdict.kind}: {verdict.reason}{self._kept_note(ws)}")
        finally:
            await self._cleanup(ws, succeeded)

    async def cli_version(self, binary: str, run_as: RunAs) -> str:
        """`claude --version`, once per binary (recorded in each result); "unknown" when it
        cannot say. Run as the run's uid: the worker's own identity executes nothing it ships."""
        if binary not in self._versions:
            try:
                child = await spawn(
                    [binary, "--version"],
                    cwd=Path("/"),
                    env={
                        "PATH": self.settings.child_path,
                        "HOME": "/nonexistent",
                        "DISABLE_AUTOUPDATER": "1",
                    },
                    run_as=run_as,
                    limits=Limits.from_settings(self.settings),
                )
                out, _ = await asyncio.wait_for(child.proc.communicate(), timeout=30)
                self._versions[binary] = out.decode("utf-8", "replace").strip()[:200] or "unknown"
            except (OSError, TimeoutError) as exc:
                log.warning("claude_code: `claude --version` failed", error=str(exc))
                return "unknown"
        return self._versions[binary]

    async def probe_sandbox(self, run_as: RunAs | None = None) -> Probe:
        """Which isolation runs get on this worker (probed once). Loud when it is not bwrap."""
        if self._probe is not None:
            return self._probe
        s = self.settings
        run_as = run_as or RunAs.for_worker(s)
        if s.sandbox == "none":
            found = Probe("uid-drop", reason="HERDER_CLAUDE_SANDBOX=none")
        else:
            found = await asyncio.to_thread(probe, s.bwrap_bin, run_as.uid, run_as.gid)
        poisonable = writable_by_others(s.workspace_root)
        if not found.sandboxed:
            if poisonable:
                log.error(
                    "claude_code: without a sandbox, runs read CLAUDE.md/.claude from these "
                    "directories above the workspace root, which others can write",
                    paths=[str(p) for p in poisonable],
                    hint="put HERDER_CLAUDE_WORKSPACE_ROOT under a root-owned directory",
                )
            if s.sandbox == "bwrap":
                raise RetryableError(f"HERDER_CLAUDE_SANDBOX=bwrap but {found.reason}")
            log.error(
                "claude_code: runs are NOT sandboxed; falling back to the uid drop",
                reason=found.reason,
                lost="own PID namespace, private mount view, no view of the worker or other runs",
            )
        else:
            log.info("claude_code: one bwrap sandbox per run", bwrap=found.bwrap, version=found.version)
        self._probe = found
        return found

    def _check_reachable(self, ws: Workspace, run_as: RunAs) -> None:
        # A root under a private directory (e.g. /root/...) still lets the CLI start, but its
        # HOME and TMPDIR are unusable: say so once instead of letting it fail obscurely.
        if not run_as.drops or ws.path.parent in self._checked_roots:
            return
        self._checked_roots.add(ws.path.parent)
        blocked = first_untraversable(ws.home, run_as.uid or 0, run_as.gid if run_as.gid is not None else -1)
        if blocked is not None:
            log.warning(
                "claude_code: workspace root not reachable by the run uid; HOME and TMPDIR will not work",
                uid=run_as.uid,
                blocked=str(blocked),
                hint="put HERDER_CLAUDE_WORKSPACE_ROOT under a directory with o+x (e.g. /tmp or /var/lib)",
            )

    def _kept_note(self, ws: Workspace) -> str:
        keep = self.settings.keep_on_failure_seconds
        return f" (workspace kept {keep:g} s at {ws.path})" if keep > 0 else ""

    async def _cleanup(self, ws: Workspace, succeeded: bool) -> None:
        try:
            if succeeded or self.settings.keep_on_failure_seconds <= 0:
                await asyncio.to_thread(remove_workspace, ws)
            else:
                keep_workspace(ws)  # synchronous: it must happen even when we are being cancelled
        except OSError as exc:
            log.warning("claude_code: workspace cleanup failed", path=str(ws.path), error=str(exc))


NO_KEY_HINT = (
    " (hint: set ANTHROPIC_API_KEY on the worker — runs get it through HERDER_CLAUDE_PASS_ENV — "
    "or add the variable your CLI authenticates with to HERDER_CLAUDE_ENV_ALLOWLIST and the payload's env)"
)


async def _report(
    ctx: JobContext,
    verdict: Verdict,
    outcome: RunOutcome | None,
    s: ClaudeCodeSettings,
    so_far: Summary | None = None,
) -> None:
    """The last progress update: the outcome, cost and turns, for `herder job ID` and the dashboard.
    A run cut off by its deadline keeps the progress it had made (`so_far`)."""
    data: dict[str, Any] = {"phase": "succeeded" if verdict.ok else "failed"}
    if so_far is not None:
        data.update(so_far.as_progress())
    if outcome is not None:
        data.update(outcome.summary.as_progress())
        data.update(
            returncode=outcome.returncode,
            stdout_bytes=outcome.stats.stdout_bytes,
            dropped_bytes=outcome.stats.dropped_bytes,
        )
    if not verdict.ok:
        data.update(failure=verdict.kind, reason=verdict.reason)
    await _publish(ctx, data, s)


async def _publish(ctx: JobContext, data: dict[str, Any], s: ClaudeCodeSettings) -> None:
    # Progress is for people watching: failing to store it must not fail the run, and a store
    # that hangs (or swallows our cancellation) must not hold the run's slot.
    async def publish() -> None:
        try:
            await ctx.progress(data)
        except Exception as exc:
            log.warning("claude_code: progress not published", job=ctx.job_id, error=str(exc))

    await bounded(asyncio.create_task(publish(), name="progress"), s.stop_bound_seconds)
