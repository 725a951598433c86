"""Run the CLI once: spawn it sandboxed, write the prompt to its stdin, stream its stdout into
progress and the event log, and make sure nothing it started outlives it.

Memory per run is bounded whatever the child prints: lines longer than `max_line_bytes` are
dropped whole; past `max_output_bytes` lines are only counted (except a `result` line); the
event log stops growing at `max_log_bytes`; stderr keeps a tail. The pipe is always drained so
the child never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from herder.errors import RetryableError
from herder.logs import get_logger
from herder.processors.claude_code.bwrap import Isolation, Sandbox, wrap
from herder.processors.claude_code.sandbox import (
    MARKER_ENV,
    Killable,
    Limits,
    ProcessGroup,
    RunAs,
    spawn,
    tree_bytes,
)
from herder.processors.claude_code.settings import ClaudeCodeSettings
from herder.processors.claude_code.stream import LineSplitter, Summary, extract_result, fold, parse_line
from herder.tasks import JobContext

log = get_logger(__name__)

READ_CHUNK = 64 * 1024
NON_JSON_LINES_LOGGED = 20
_RESULT_TAG = b'"type":"result"'


@dataclass
class OutputStats:
    stdout_bytes: int = 0
    lines: int = 0
    non_json_lines: int = 0
    oversize_lines: int = 0
    dropped_bytes: int = 0  # oversize lines, and everything past max_output_bytes
    logged_events: int = 0
    logged_bytes: int = 0
    unlogged_events: int = 0  # past max_log_bytes
    stderr_bytes: int = 0
    pipe_held_open: bool = False  # something that escaped the kill kept stdout open
    stragglers_killed: bool = False  # processes were still running after the CLI exited
    disk_cap_exceeded: int = 0  # bytes the workspace held when the run was killed for it (0: never)


@dataclass
class RunOutcome:
    returncode: int | None
    result: dict[str, Any] | None
    summary: Summary
    stderr_tail: str
    stats: OutputStats
    first_event_seconds: float | None = None  # spawn to the first stream-json event


class _Run:
    """The state of one CLI run while it streams."""

    def __init__(
        self, ctx: JobContext, settings: ClaudeCodeSettings, live: list[Summary] | None = None
    ) -> None:
        self.ctx = ctx
        self._live = live
        self.s = settings
        self.summary = Summary()
        self.result: dict[str, Any] | None = None
        self.stats = OutputStats()
        self.stderr_tail = b""
        self._pending: list[dict[str, Any]] = []
        self._log_truncated = False
        self._dirty = True
        self._last_progress = 0.0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.phase = "starting"
        self.spawned_at = time.monotonic()
        self.first_event_seconds: float | None = None

    # ---- output handling (no I/O) ----

    def on_line(self, line: bytes) -> None:
        self.stats.lines += 1
        if self.stats.stdout_bytes > self.s.max_output_bytes and _RESULT_TAG not in line:
            self.stats.dropped_bytes += len(line) + 1
            return
        event = parse_line(line)
        if event is None:
            self.stats.non_json_lines += 1
            if self.stats.non_json_lines <= NON_JSON_LINES_LOGGED and line.strip():
                text = line[:500].decode("utf-8", "replace")
                self._log_event({"type": "herder", "subtype": "non_json_line", "text": text}, len(text) + 64)
            return
        if self.first_event_seconds is None:
            self.first_event_seconds = time.monotonic() - self.spawned_at
        self.summary = fold(self.summary, event)
        if self._live is not None:
            self._live[:] = [self.summary]
        self._dirty = True
        result = extract_result(event)
        if result is not None:
            self.result = result
        self._log_event(event, len(line))

    def _log_event(self, event: dict[str, Any], size: int) -> None:
        if self.stats.logged_bytes + size > self.s.max_log_bytes:
            self.stats.unlogged_events += 1
            if not self._log_truncated:
                self._log_truncated = True
                self._pending.append(
                    {"type": "herder", "subtype": "log_truncated", "max_log_bytes": self.s.max_log_bytes}
                )
            return
        self.stats.logged_bytes += size
        self.stats.logged_events += 1
        self._pending.append(event)
        if len(self._pending) >= self.s.log_batch_events:
            self._wake.set()

    def log_now(self, event: dict[str, Any]) -> None:
        """Queue an event of our own for the log, outside the output cap (it is small)."""
        self._pending.append(event)

    def mark_dirty(self) -> None:
        self._dirty = True

    def progress(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            **self.summary.as_progress(),
            "stdout_bytes": self.stats.stdout_bytes,
            "dropped_bytes": self.stats.dropped_bytes,
        }

    # ---- I/O ----

    async def feed(self, stdin: asyncio.StreamWriter, prompt: bytes) -> None:
        try:
            stdin.write(prompt)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child exited or closed stdin: its exit status tells the story
        finally:
            stdin.close()  # EOF: the CLI starts once it has the whole prompt
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await stdin.wait_closed()

    async def read_stdout(self, stream: asyncio.StreamReader) -> None:
        splitter = LineSplitter(self.s.max_line_bytes)
        try:
            while chunk := await stream.read(READ_CHUNK):
                self.stats.stdout_bytes += len(chunk)
                for line in splitter.feed(chunk):
                    self.on_line(line)
            for line in splitter.flush():
                self.on_line(line)
        finally:
            self.stats.oversize_lines = splitter.oversize_lines
            self.stats.dropped_bytes += splitter.oversize_bytes

    async def read_stderr(self, stream: asyncio.StreamReader) -> None:
        cap = self.s.stderr_tail_bytes
        tail = bytearray()
        try:
            while chunk := await stream.read(READ_CHUNK):
                self.stats.stderr_bytes += len(chunk)
                tail += chunk
                if len(tail) > 2 * cap:
                    del tail[:-cap]
        finally:
            self.stderr_tail = bytes(tail[-cap:])

    async def publish_loop(self) -> None:
        """Publish until told to stop. Stopped by `_stop`, not by cancellation: a Redis call in
        flight (redis-py with a socket timeout) can swallow a CancelledError, and a loop that
        relied on it would then run, and hold its job's slot, for ever."""
        interval = self.s.progress_interval_seconds
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            await self.flush()

    async def watch_disk(self, workspace: Path, group: Killable) -> None:
        """Kill the run when its workspace grows past `workspace_max_bytes`. Polling: a fast
        writer can overshoot by what it writes in one interval (RLIMIT_FSIZE caps each file)."""
        cap = self.s.workspace_max_bytes
        if cap is None:
            return
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.s.disk_check_interval_seconds)
            if self._stop.is_set():
                return
            used = await asyncio.to_thread(tree_bytes, workspace)
            if used > cap:
                self.stats.disk_cap_exceeded = used
                log.warning("claude_code: workspace over its disk cap; killing the run", bytes=used, cap=cap)
                group.kill()
                return

    async def stop_publishing(self, task: asyncio.Task[None], bound: float) -> None:
        """Ask the publish loop to stop and wait at most `bound` seconds for it; past that it is
        cancelled and abandoned (never awaited again), so nothing here can hang the run."""
        self._stop.set()
        self._wake.set()
        await bounded(task, bound)

    async def flush(self, final: bool = False) -> None:
        now = time.monotonic()
        if self._dirty and (final or now - self._last_progress >= self.s.progress_interval_seconds):
            self._dirty = False
            self._last_progress = now
            await _advisory(self.ctx.progress, self.progress())
        if self._pending:
            batch, self._pending = self._pending, []
            await _advisory(self.ctx.log, batch)


_ABANDONED: set[asyncio.Task[Any]] = set()


def _abandon(task: asyncio.Task[Any]) -> None:
    # Keep a reference until it ends (or the loop closes) and consume its outcome quietly.
    _ABANDONED.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        _ABANDONED.discard(t)
        if not t.cancelled():
            t.exception()

    task.add_done_callback(done)


async def bounded(task: asyncio.Task[Any], bound: float) -> bool:
    """Wait for `task` at most `bound` seconds; then cancel it without waiting again. True if it
    finished by itself. `asyncio.wait` never cancels or awaits past its timeout, unlike
    `wait_for`, which waits for a cancelled task however long it takes to honour it."""
    done, _ = await asyncio.wait({task}, timeout=bound)
    if task in done:
        if not task.cancelled():
            task.exception()  # an advisory task's error is already logged; mark it retrieved
        return True
    task.cancel()
    _abandon(task)
    log.warning("claude_code: a task ignored its stop and was abandoned", task=task.get_name())
    return False


async def _advisory(fn: Callable[[Any], Awaitable[None]], arg: Any) -> None:
    # Progress and logs are for people watching; a failure to store them must not fail the run.
    try:
        await fn(arg)
    except Exception as exc:
        log.warning("claude_code: progress/log not published", error=f"{type(exc).__name__}: {exc}")


async def run_cli(
    argv: list[str],
    *,
    prompt: str,
    cwd: Path,
    env: Mapping[str, str],
    run_as: RunAs,
    limits: Limits,
    ctx: JobContext,
    settings: ClaudeCodeSettings,
    isolation: Isolation | None = None,
    workspace: Path | None = None,
    live: list[Summary] | None = None,
) -> RunOutcome:
    """Run the CLI to completion and report what it printed and how it exited.

    On cancellation (the worker's timeout, a cancel, the drain deadline) the whole process group
    is terminated — SIGTERM, then SIGKILL after the grace period — before CancelledError goes on.
    With `isolation` the CLI runs in its own bwrap sandbox, and "the whole group" is its PID
    namespace. `live`, when given, holds the latest summary while the run streams: a caller
    whose deadline cancels the run still knows how far it got.
    """
    run = _Run(ctx, settings, live)
    command = argv
    if isolation is not None:
        command = wrap(
            isolation.bwrap,
            argv,
            workspace=isolation.workspace,
            cwd=cwd,
            ro_binds=isolation.ro_binds,
            share_net=isolation.share_net,
        )
    try:
        child = await spawn(
            command, cwd=cwd, env=env, run_as=run_as, limits=limits, stdin=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise RetryableError(f"cannot start the Claude Code CLI {argv[0]!r}: {exc}") from None
    proc = child.proc
    group: Killable
    if isolation is not None:
        group = Sandbox(proc.pid)
    else:
        group = ProcessGroup(proc.pid, env.get(MARKER_ENV), run_as.effective_uid)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    run.phase = "running"
    feeder = asyncio.create_task(run.feed(proc.stdin, prompt.encode("utf-8")))
    out_reader = asyncio.create_task(run.read_stdout(proc.stdout))
    err_reader = asyncio.create_task(run.read_stderr(proc.stderr))
    publisher = asyncio.create_task(run.publish_loop())
    watchdog = asyncio.create_task(run.watch_disk(workspace or cwd, group))
    tasks = (feeder, out_reader, err_reader, watchdog, publisher)
    try:
        returncode = await child.wait()
        if isolation is not None and 128 < returncode < 128 + 65:
            # bwrap reports a command killed by signal N as exit status 128 + N.
            returncode = -(returncode - 128)
        # The CLI is gone. Anything it left running goes too, which also closes the pipes.
        run.stats.stragglers_killed = bool(group.members())
        await group.terminate(settings.kill_grace_seconds)
        try:
            await asyncio.wait_for(
                asyncio.gather(out_reader, err_reader), timeout=settings.kill_grace_seconds + 5
            )
        except TimeoutError:
            run.stats.pipe_held_open = True
    except BaseException:
        await group.terminate(settings.kill_grace_seconds, child)
        raise
    finally:
        await run.stop_publishing(publisher, settings.stop_bound_seconds)
        for t in (feeder, out_reader, err_reader, watchdog):
            t.cancel()
        # Pipe readers and the feeder honour cancellation, but bound this too: no wait here may
        # keep a finished run's slot.
        await asyncio.gather(*(bounded(t, settings.stop_bound_seconds) for t in tasks[:4]))
    run.phase = "exited"
    run.mark_dirty()
    cap = settings.workspace_max_bytes
    if cap is not None and not run.stats.disk_cap_exceeded:
        # The watchdog polls: a run that wrote past the cap and ended between two polls (easy on
        # a loaded machine) is caught here, so the cap always decides the outcome.
        used = await asyncio.to_thread(tree_bytes, workspace or cwd)
        if used > cap:
            run.stats.disk_cap_exceeded = used
            log.warning("claude_code: workspace ended over its disk cap", bytes=used, cap=cap)
    if run.stderr_tail.strip():
        # The CLI's last words, for `herder job ID`: a crash rarely explains itself on stdout.
        tail = run.stderr_tail[-4096:].decode("utf-8", "replace")
        run.log_now({"type": "herder", "subtype": "stderr", "returncode": returncode, "tail": tail})
    # The last publish is bounded too: a stuck sink costs at most stop_bound_seconds.
    await bounded(asyncio.create_task(run.flush(final=True), name="final-flush"), settings.stop_bound_seconds)
    stats = asdict(run.stats)
    if run.stats.dropped_bytes or run.stats.unlogged_events or run.stats.pipe_held_open:
        log.warning("claude_code: output capped", job=ctx.job_id, **stats)
    return RunOutcome(
        returncode=returncode,
        result=run.result,
        summary=run.summary,
        stderr_tail=run.stderr_tail.decode("utf-8", "replace"),
        stats=run.stats,
        first_event_seconds=run.first_event_seconds,
    )
