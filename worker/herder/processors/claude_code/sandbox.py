"""Process-level isolation of one run: its workspace, its environment, its identity and limits,
and killing everything it started.

What this gives (and does not give) is spelled out in docs/claude-code.md. In short: a fresh
directory owned by the run, an environment built from an allow-list, an unprivileged uid when
the worker is root, rlimits, its own session and process group, and a kill that reaches the
whole group plus anything that left it but kept the run's marker in its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import resource
import secrets
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herder.errors import PermanentError, RetryableError
from herder.processors.claude_code.settings import ClaudeCodeSettings

MARKER_ENV = "HERDER_RUN_ID"
KEPT_SUFFIX = ".kept"
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38


# ---- identity and limits ------------------------------------------------------------------


@dataclass(frozen=True)
class RunAs:
    """The uid/gid the child gets; None keeps the worker's (it is not root)."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_worker(cls, settings: ClaudeCodeSettings) -> RunAs:
        if os.geteuid() == 0:
            return cls(settings.run_uid, settings.run_gid)
        return cls()

    @property
    def drops(self) -> bool:
        return self.uid is not None

    @property
    def effective_uid(self) -> int:
        return os.geteuid() if self.uid is None else self.uid


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int | None = None
    as_bytes: int | None = None
    nofile: int | None = None
    fsize_bytes: int | None = None
    nproc: int | None = None

    @classmethod
    def from_settings(cls, s: ClaudeCodeSettings) -> Limits:
        return cls(
            s.rlimit_cpu_seconds, s.rlimit_as_bytes, s.rlimit_nofile, s.rlimit_fsize_bytes, s.rlimit_nproc
        )

    def rlimits(self) -> list[tuple[int, tuple[int, int]]]:
        """(resource, (soft, hard)) pairs, clamped to the worker's own hard limits (an unprivileged
        child can only lower them)."""
        wanted: list[tuple[int, int | None, int]] = [
            # CPU: SIGXCPU at the soft limit, SIGKILL a little later if it is ignored.
            (resource.RLIMIT_CPU, self.cpu_seconds, 5),
            (resource.RLIMIT_AS, self.as_bytes, 0),
            (resource.RLIMIT_NOFILE, self.nofile, 0),
            (resource.RLIMIT_FSIZE, self.fsize_bytes, 0),
            (resource.RLIMIT_NPROC, self.nproc, 0),
            (resource.RLIMIT_CORE, 0, 0),  # a core dump would spill the run's memory to disk
        ]
        out = []
        for res, value, slack in wanted:
            if value is None:
                continue
            _, cur_hard = resource.getrlimit(res)
            out.append((res, (_clamp(value, cur_hard), _clamp(value + slack, cur_hard))))
        return out


def _clamp(value: int, hard: int) -> int:
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def make_preexec(limits: Limits) -> Callable[[], None]:
    """The function run in the child between fork and exec (after setsid and the uid drop).

    Everything is computed here, in the parent: the child only makes system calls."""
    pairs = limits.rlimits()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        for res, pair in pairs:
            resource.setrlimit(res, pair)
        # No setuid/file-capability binary can raise the child's privileges again.
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    return preexec


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Python 3.11 resolves `Process.wait()` only once every pipe is closed as well, so a
    grandchild holding stdout open would stall it for ever. This reports the exit itself."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


@dataclass
class Child:
    """A started child: the asyncio Process (pipes, pid) and its exit, pipes or not."""

    proc: asyncio.subprocess.Process
    exited: asyncio.Future[None]

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal), as soon as the process exits."""
        await asyncio.shield(self.exited)  # a cancelled waiter must not cancel the shared future
        rc = self.proc.returncode
        assert rc is not None
        return rc


def protect_worker_process() -> bool:
    """Make the calling (worker) process non-dumpable, so that processes of the same uid can
    neither ptrace it nor read its /proc/PID/environ or memory, where the Redis password and the
    API key live. Needed when runs share the worker's uid (the worker is not root). Returns
    whether the process is now protected."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    return int(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)) == 0


async def spawn(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    run_as: RunAs,
    limits: Limits,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
) -> Child:
    """Start `argv` in a new session (so its own process group), as `run_as`, under `limits`."""
    kwargs: dict[str, Any] = {}
    if run_as.drops:
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=[])
    loop = asyncio.get_running_loop()
    protocol = _ExitAwareProtocol(limit=2**16, loop=loop)
    transport, _ = await loop.subprocess_exec(
        lambda: protocol,
        *argv,
        cwd=str(cwd),
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=make_preexec(limits),
        umask=0o077,
        close_fds=True,
        **kwargs,
    )
    return Child(asyncio.subprocess.Process(transport, protocol, loop), protocol.exited)


# ---- environment --------------------------------------------------------------------------


def check_env_names(settings: ClaudeCodeSettings, names: Iterable[str]) -> None:
    """Fail permanently when a payload asks for a variable this worker does not hand out."""
    allowed = set(settings.env_allowlist) | set(settings.pass_env)
    refused = sorted(n for n in names if n not in allowed)
    if refused:
        raise PermanentError(
            f"environment variable(s) {', '.join(refused)} not in this worker's allow-list "
            "(HERDER_CLAUDE_ENV_ALLOWLIST)"
        )


def build_env(
    settings: ClaudeCodeSettings,
    requested: Iterable[str],
    home: Path,
    tmp: Path,
    marker: str,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's whole environment: nothing is inherited that is not named here."""
    source = os.environ if source is None else source
    env = dict(settings.fixed_env)
    for name in [*settings.pass_env, *requested]:
        if name in source:
            env[name] = source[name]
    env.update(
        PATH=settings.child_path,
        HOME=str(home),
        TMPDIR=str(tmp),
        LANG=env.get("LANG", "C.UTF-8"),
        # Lets the kill sweep find processes that left the session (see ProcessGroup).
        **{MARKER_ENV: marker},
    )
    return env


def new_marker(job_id: str, attempt: int) -> str:
    return f"{_safe_name(job_id)}.{attempt}.{secrets.token_hex(8)}"


# ---- workspaces ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """<root>/<name>/ holding work/ (the cwd), home/ (HOME) and tmp/ (TMPDIR)."""

    path: Path

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def home(self) -> Path:
        return self.path / "home"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"

    @property
    def kept_marker(self) -> Path:
        # Beside the workspace, not in it: the child cannot plant or redirect it.
        return self.path.with_name(self.path.name + KEPT_SUFFIX)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64] or "job"


def prepare_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RetryableError(
            f"cannot create the workspace root {root} ({exc.strerror}): create it owned by uid "
            f"{os.geteuid()} (the image and chart do), or set HERDER_CLAUDE_WORKSPACE_ROOT"
        ) from None
    st = root.lstat()
    # Under a shared /tmp someone else could have created it first, or made it a symlink.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
        raise RetryableError(f"workspace root {root} is not a directory owned by this worker's user")
    if st.st_uid == os.geteuid():
        # Traversable by the run's uid, but not listable: runs cannot see each other's names.
        os.chmod(root, 0o711)


def writable_by_others(path: Path) -> list[Path]:
    """`path` and its ancestors that someone other than root or this worker's user could write
    to (or replace). Without a sandbox the CLI reads CLAUDE.md and .claude/ from every directory
    above its cwd, so instructions planted there reach every run (a shared /tmp is one)."""
    found = []
    me = os.geteuid()
    for d in [*reversed(path.parents), path]:
        try:
            st = d.lstat()
        except OSError:
            continue
        if st.st_uid not in (0, me) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(d)
    return found


def first_untraversable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that `uid`/`gid` may not enter (None: all fine).

    The child gets its cwd before it drops privileges, so it starts even when this is not None;
    but HOME and TMPDIR are absolute paths it could then not use."""
    for d in [*reversed(path.parents), path]:
        try:
            st = d.stat()
        except OSError:
            return d
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


def create_workspace(root: Path, job_id: str, attempt: int, run_as: RunAs) -> Workspace:
    prepare_root(root)
    ws = Workspace(root / f"{_safe_name(job_id)}-a{attempt}-{secrets.token_hex(4)}")
    ws.path.mkdir(mode=0o700)
    for d in (ws.work, ws.home, ws.tmp):
        d.mkdir(mode=0o700)
    if run_as.drops:
        for d in (ws.path, ws.work, ws.home, ws.tmp):
            os.chown(d, run_as.uid or 0, run_as.gid if run_as.gid is not None else -1)
    return ws


def chown_tree(path: Path, run_as: RunAs) -> None:
    """Give a tree the worker created (a copied path source) to the run's uid; links not followed."""
    if not run_as.drops:
        return
    uid, gid = run_as.uid or 0, run_as.gid if run_as.gid is not None else -1
    os.lchown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _make_removable(func: Any, path: str, _exc: Any) -> None:
    # The child may leave read-only dirs behind; as the same uid we may need to chmod first.
    with contextlib.suppress(OSError):
        parent = os.path.dirname(path)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
    with contextlib.suppress(FileNotFoundError):
        func(path)


def remove_workspace(ws: Workspace) -> None:
    """Remove the workspace (symlink-safe: rmtree never follows links out of the tree)."""
    if ws.path.exists():
        shutil.rmtree(ws.path, onerror=_make_removable)
    ws.kept_marker.unlink(missing_ok=True)


def keep_workspace(ws: Workspace, now: float | None = None) -> None:
    """Mark a failed run's workspace for removal by a later sweep; its mtime is the failure time."""
    marker = ws.kept_marker
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    if now is not None:
        os.utime(marker, (now, now))


def tree_bytes(path: Path) -> int:
    """Disk blocks used under `path` (links not followed; files that vanish are skipped)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def sweep_kept(
    root: Path,
    keep_seconds: float,
    now: float | None = None,
    max_count: int | None = None,
    max_bytes: int | None = None,
) -> list[Path]:
    """Remove kept workspaces older than `keep_seconds`, larger than `max_bytes`, and all but the
    newest `max_count`: failed runs cannot fill the disk by being kept. Returns what was removed."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    kept: list[tuple[float, Path]] = []
    for marker in root.glob("*" + KEPT_SUFFIX):
        try:
            if marker.is_symlink():
                continue
            kept.append((marker.lstat().st_mtime, marker))
        except FileNotFoundError:
            continue
    kept.sort(reverse=True)  # newest first
    for index, (mtime, marker) in enumerate(kept):
        ws = Workspace(marker.with_name(marker.name[: -len(KEPT_SUFFIX)]))
        expired = mtime + keep_seconds <= now
        too_many = max_count is not None and index >= max_count
        if not (expired or too_many or (max_bytes is not None and tree_bytes(ws.path) > max_bytes)):
            continue
        with contextlib.suppress(OSError):
            remove_workspace(ws)
            removed.append(ws.path)
    return removed


# ---- killing everything a run started -----------------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def scan_processes(pgid: int, marker: str | None, uid: int | None) -> list[int]:
    """Live (non-zombie) processes in process group or session `pgid`, or, among processes of
    `uid`, those whose environment carries `MARKER_ENV=marker` (they called setsid to leave)."""
    me = os.getpid()
    needle = f"{MARKER_ENV}={marker}".encode() if marker else None
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        raw = _read(f"/proc/{pid}/stat")
        if raw is None:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 4 or fields[0] in (b"Z", b"X"):
            continue
        pgrp, session = int(fields[2]), int(fields[3])
        if pgrp == pgid or session == pgid:
            found.append(pid)
            continue
        if needle is None:
            continue
        try:
            if uid is not None and os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        environ = _read(f"/proc/{pid}/environ")
        if environ and needle in environ.split(b"\0"):
            found.append(pid)
    return found


class Killable:
    """Something whose processes can be listed, signalled and killed; `terminate` escalates."""

    def members(self) -> list[int]:
        raise NotImplementedError

    def signal(self, sig: int) -> bool:
        raise NotImplementedError

    def kill(self, rounds: int = 50) -> bool:
        raise NotImplementedError

    async def terminate(self, grace: float, child: Child | None = None) -> None:
        """SIGTERM everyone, wait up to `grace` seconds for them to go, then SIGKILL the rest.

        The SIGKILL runs in `finally`: a second cancellation during the grace period cannot skip it."""
        try:
            if self.signal(signal.SIGTERM) and grace > 0:
                deadline = time.monotonic() + grace
                # Polling /proc: there is no event for "a process outside our tree exited".
                for _ in range(int(grace / 0.05) + 1):
                    if time.monotonic() >= deadline or not self.members():
                        break
                    await asyncio.sleep(0.05)
        finally:
            self.kill()
        if child is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), timeout=5)


class ProcessGroup(Killable):
    """Everything one child started: its process group/session (pgid == the child's pid, as it
    was started with setsid), plus marked processes of its uid that escaped with setsid."""

    def __init__(self, pgid: int, marker: str | None = None, uid: int | None = None) -> None:
        if pgid <= 1 or pgid == os.getpgrp():
            raise ValueError(f"refusing to manage process group {pgid}")
        self.pgid = pgid
        self.marker = marker
        self.uid = uid

    def members(self) -> list[int]:
        return scan_processes(self.pgid, self.marker, self.uid)

    def signal(self, sig: int) -> bool:
        """Send `sig` to every member; True if there was anyone to send it to."""
        pids = self.members()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return bool(pids)

    def kill(self, rounds: int = 50) -> bool:
        """SIGKILL until no member is left (a member may fork while we look). Synchronous on
        purpose: it must complete even inside a cancelled task. True if none is left."""
        for _ in range(rounds):
            if not self.signal(signal.SIGKILL):
                return True
            time.sleep(0.002)
        return not self.members()
