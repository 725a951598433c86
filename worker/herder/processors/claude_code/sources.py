"""Fill a fresh workspace from the payload's source: nothing, a git checkout, or a copy of a
directory under the worker's path root.

Git runs inside the same sandbox as the CLI (the run's uid, rlimits, its own process group),
since fetching and checking out an untrusted repository is untrusted work too.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from herder.errors import PermanentError, RetryableError
from herder.processors.claude_code.payload import EmptyWorkspace, GitWorkspace, PathWorkspace
from herder.processors.claude_code.sandbox import (
    MARKER_ENV,
    Limits,
    ProcessGroup,
    RunAs,
    Workspace,
    chown_tree,
    spawn,
)
from herder.processors.claude_code.settings import ClaudeCodeSettings

_GIT_PERMANENT = re.compile(
    r"authentication failed|repository not found|not found|couldn't find remote ref|not our ref"
    r"|does not appear to be a git repository|\b40[134]\b|permission denied \(publickey",
    re.IGNORECASE,
)
_GIT_TRANSIENT = re.compile(
    r"could not resolve host|timed out|timeout|connection (reset|refused|timed out)|early EOF"
    r"|the remote end hung up|unable to access|\b(429|5\d\d)\b|temporarily",
    re.IGNORECASE,
)
_OUTPUT_CAP = 64 * 1024


def git_scheme(url: str) -> str:
    return urlsplit(url).scheme if "://" in url else "ssh"  # user@host:path is ssh


def resolve_path_source(settings: ClaudeCodeSettings, source: PathWorkspace) -> Path:
    """The real directory a path source names; PermanentError if it is outside the root."""
    if settings.path_root is None:
        raise PermanentError("path workspaces are disabled on this worker (HERDER_CLAUDE_PATH_ROOT is unset)")
    root = settings.path_root.resolve(strict=False)
    try:
        # resolve() follows symlinks, so a link pointing out of the root is caught here.
        target = (root / source.path).resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise PermanentError(f"path workspace {source.path!r} does not exist under the path root") from None
    if not target.is_relative_to(root):
        raise PermanentError(f"path workspace {source.path!r} resolves outside the path root")
    if not target.is_dir():
        raise PermanentError(f"path workspace {source.path!r} is not a directory")
    return target


async def materialize(
    source: EmptyWorkspace | GitWorkspace | PathWorkspace,
    ws: Workspace,
    settings: ClaudeCodeSettings,
    run_as: RunAs,
    env: dict[str, str],
) -> None:
    if isinstance(source, EmptyWorkspace):
        return
    if isinstance(source, PathWorkspace):
        target = resolve_path_source(settings, source)

        def copy() -> None:
            # symlinks=True: links are copied as links, never followed out of the root.
            shutil.copytree(target, ws.work, symlinks=True, dirs_exist_ok=True)
            chown_tree(ws.work, run_as)

        await asyncio.to_thread(copy)
        return
    await _git_checkout(source, ws, settings, run_as, env)


async def _git_checkout(
    source: GitWorkspace, ws: Workspace, settings: ClaudeCodeSettings, run_as: RunAs, env: dict[str, str]
) -> None:
    scheme = git_scheme(source.url)
    allowed = [s.lower() for s in settings.git_allowed_schemes]
    if scheme not in allowed:
        raise PermanentError(
            f"git scheme {scheme!r} is not enabled on this worker (HERDER_CLAUDE_GIT_ALLOWED_SCHEMES={','.join(allowed)})"
        )
    git = shutil.which(settings.git_bin) or settings.git_bin
    git_env = {
        **env,
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        # Applies to every transport git uses, submodules and redirects included.
        "GIT_ALLOW_PROTOCOL": ":".join(allowed),
    }
    ref = source.ref or "HEAD"
    steps = [
        [git, "init", "-q", str(ws.work)],
        [git, "-C", str(ws.work), "fetch", "-q", "--depth", "1", "--no-tags", "--", source.url, ref],
        [
            git,
            "-C",
            str(ws.work),
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            "FETCH_HEAD",
        ],
    ]
    for argv in steps:
        await _run_step(argv, ws, git_env, run_as, settings)


async def _run_step(
    argv: list[str], ws: Workspace, env: dict[str, str], run_as: RunAs, settings: ClaudeCodeSettings
) -> None:
    try:
        child = await spawn(
            argv,
            cwd=ws.path,
            env=env,
            run_as=run_as,
            limits=Limits.from_settings(settings),
            stdout=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise RetryableError(f"cannot run git ({argv[0]}): {exc}") from None
    group = ProcessGroup(child.pid, env.get(MARKER_ENV), run_as.effective_uid)
    stderr = child.proc.stderr
    assert stderr is not None
    try:
        async with asyncio.timeout(settings.git_timeout_seconds):
            err = await stderr.read(_OUTPUT_CAP)
            # Keep draining beyond the cap so git never blocks on a full pipe.
            while await stderr.read(_OUTPUT_CAP):
                pass
            rc = await child.wait()
    except TimeoutError:
        await group.terminate(settings.kill_grace_seconds, child)
        raise RetryableError(
            f"{_step_name(argv, ws)} timed out after {settings.git_timeout_seconds:g} s"
        ) from None
    except BaseException:
        await group.terminate(settings.kill_grace_seconds, child)
        raise
    group.kill()  # nothing git started may outlive it
    if rc != 0:
        text = " ".join(err.decode("utf-8", "replace").split())[-500:]
        what = _step_name(argv, ws)
        if not _GIT_PERMANENT.search(text) and _GIT_TRANSIENT.search(text):
            raise RetryableError(f"{what} failed (exit {rc}): {text}")
        raise PermanentError(f"{what} failed (exit {rc}): {text}")


def _step_name(argv: list[str], ws: Workspace) -> str:
    words = [a for a in argv[1:] if not a.startswith("-") and a != str(ws.work)]
    return "git " + (words[0] if words else "")
