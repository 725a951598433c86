"""One bubblewrap (`bwrap`) sandbox per run, and killing it.

Each run gets its own user, PID, mount, IPC, UTS and cgroup namespaces (the network is shared
only because the CLI must reach the API): a read-only system, a private /tmp, its own workspace
as the only writable place, no view of other runs, the worker's files or its processes. The
kernel kills every process of a PID namespace when its init exits, so nothing a run starts
outlives it — no sweep heuristics. bwrap runs unprivileged (a root worker drops to the run uid
first), so root and non-root workers get the same sandbox.

Where bwrap or user namespaces are missing, runs fall back to the uid-drop path of sandbox.py;
`probe()` says which, and the worker logs it loudly and `herder worker --check` reports it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from herder.processors.claude_code.sandbox import Killable
from herder.processors.claude_code.settings import DEFAULT_RO_BINDS

# On merged-/usr systems these are symlinks into /usr; elsewhere real directories.
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Isolation:
    """How one run is wrapped: the bwrap binary, the run's workspace, what else it may read."""

    bwrap: str
    workspace: Path
    ro_binds: tuple[str, ...]
    share_net: bool = True


@dataclass(frozen=True)
class Probe:
    """What this machine allows: `mode` is "bwrap" or "uid-drop"; `reason` says why not bwrap."""

    mode: str
    bwrap: str | None = None
    version: str | None = None
    reason: str = ""
    limits: str = "rlimits"  # how per-run limits are enforced (see limits_mode)
    details: list[str] = field(default_factory=list)

    @property
    def sandboxed(self) -> bool:
        return self.mode == "bwrap"


def probe(bwrap_bin: str, uid: int | None = None, gid: int | None = None) -> Probe:
    """Run a trivial sandbox (as `uid`, like a real run) to see whether bwrap works here."""
    found = shutil.which(bwrap_bin) if os.sep not in bwrap_bin else bwrap_bin
    limits = limits_mode()
    if not found or not os.access(found, os.X_OK):
        return Probe("uid-drop", reason=f"bwrap not found ({bwrap_bin!r}); install bubblewrap", limits=limits)
    argv = [found, "--unshare-all", "--share-net", "--die-with-parent", "--new-session"]
    argv += [*_system_binds(DEFAULT_RO_BINDS), "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    kwargs: dict[str, object] = {}
    if uid is not None:
        kwargs.update(user=uid, group=gid, extra_groups=[])
    try:
        version = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, **kwargs)  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError) as exc:
        return Probe("uid-drop", found, reason=f"bwrap cannot run: {exc}", limits=limits)
    if done.returncode != 0:
        why = (done.stderr or "").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return Probe(
            "uid-drop",
            found,
            version,
            reason=f"bwrap cannot create namespaces here ({why[0]}); unprivileged user namespaces off?",
            limits=limits,
        )
    return Probe("bwrap", found, version, limits=limits)


def limits_mode() -> str:
    """Per-run limits: a cgroup v2 child per run needs a writable, delegated cgroup v2 tree, which
    this code does not manage yet; everywhere it uses rlimits (set before bwrap starts, inherited
    by everything in the sandbox). Reported so the operator knows what caps a run."""
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    if controllers.exists():
        return "rlimits (cgroup v2 present; per-run cgroups not used)"
    return "rlimits (cgroups v1/hybrid: no cgroup v2 tree at /sys/fs/cgroup)"


def _system_binds(paths: Iterable[str]) -> list[str]:
    args: list[str] = []
    for link in _ROOT_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    for p in paths:
        args += ["--ro-bind-try", p, p]
    return args


def wrap(
    bwrap: str,
    argv: list[str],
    *,
    workspace: Path,
    cwd: Path,
    ro_binds: Iterable[str],
    share_net: bool = True,
) -> list[str]:
    """The bwrap command line that runs `argv` in a fresh sandbox. Pure apart from reading which
    of / 's entries are symlinks. The environment is not on it (argv is world-readable): bwrap
    hands its own, already allow-listed, environment to the command."""
    binary = Path(argv[0])
    extra = [str(binary.parent), str(binary.resolve().parent)]
    args = [bwrap, "--unshare-all"]
    if share_net:
        args.append("--share-net")
    args += ["--die-with-parent", "--new-session", "--hostname", "herder-run"]
    # /tmp first: binds under it (a CLI installed below /tmp, the workspace) go on top of it.
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    args += _system_binds([*ro_binds, *dict.fromkeys(extra)])
    # The workspace at its own path (HOME, TMPDIR and cwd stay what the worker computed); its
    # parents are empty directories of the sandbox's own root, so nothing above it is visible.
    args += ["--bind", str(workspace), str(workspace), "--chdir", str(cwd)]
    return [*args, "--", *argv]


# ---- the processes of one sandbox -----------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


class Sandbox(Killable):
    """The outer bwrap (a child of the worker) and everything in the PID namespace it made.

    SIGTERM goes to every process inside; SIGKILL goes to the namespace's init (and the outer
    bwrap), and the kernel then kills everything else in the namespace."""

    def __init__(self, outer_pid: int) -> None:
        super().__init__()
        self.outer = outer_pid
        self._init: int | None = None
        self._ns: str | None = None

    def _locate(self) -> None:
        if self._ns is not None:
            return
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields is not None and len(fields) > 1 and int(fields[1]) == self.outer:
                    ns = _pid_ns(int(entry.name))
                    if ns is not None and ns != _pid_ns(os.getpid()):
                        self._init, self._ns = int(entry.name), ns
                        return

    def members(self) -> list[int]:
        """Live processes of the sandbox (the outer bwrap included)."""
        self._locate()
        found = [self.outer] if _alive(self.outer) else []
        if self._ns is None:
            return found
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                pid = int(entry.name)
                if pid != self.outer and _pid_ns(pid) == self._ns and _alive(pid):
                    found.append(pid)
        return found

    def signal(self, sig: int) -> bool:
        pids = self.members()
        for pid in pids:
            # The outer bwrap would die of SIGTERM and take the sandbox down at once, skipping
            # the grace period: it only ever gets SIGKILL.
            if sig == signal.SIGKILL or pid != self.outer:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        return bool(pids)

    def kill(self, rounds: int = 250) -> bool:
        """SIGKILL the namespace's init (the kernel kills the rest) and the outer bwrap; wait,
        synchronously and bounded, until they are gone. True if none is left."""
        for _ in range(rounds):
            if not self.signal(signal.SIGKILL):
                return True
            time.sleep(0.004)
        return not self.members()
