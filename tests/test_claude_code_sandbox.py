"""The sandbox pieces of claude_code on their own: settings, environment, workspaces, limits,
and the process-group kill."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from herder.errors import PermanentError, RetryableError
from herder.processors.claude_code.sandbox import (
    KEPT_SUFFIX,
    MARKER_ENV,
    Limits,
    ProcessGroup,
    RunAs,
    build_env,
    check_env_names,
    create_workspace,
    first_untraversable,
    keep_workspace,
    prepare_root,
    remove_workspace,
    scan_processes,
    spawn,
    sweep_kept,
)
from herder.processors.claude_code.settings import ClaudeCodeSettings

IS_ROOT = os.geteuid() == 0


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERDER_CLAUDE_BIN", "/opt/claude/bin/claude")
    monkeypatch.setenv("HERDER_CLAUDE_ENV_ALLOWLIST", "GH_TOKEN, NPM_TOKEN")
    monkeypatch.setenv("HERDER_CLAUDE_GIT_ALLOWED_SCHEMES", '["https"]')
    monkeypatch.setenv("HERDER_CLAUDE_RLIMIT_AS_BYTES", "1073741824")
    s = ClaudeCodeSettings()
    assert s.bin == "/opt/claude/bin/claude"
    assert s.env_allowlist == ["GH_TOKEN", "NPM_TOKEN"]
    assert s.git_allowed_schemes == ["https"]
    assert s.rlimit_as_bytes == 1 << 30
    assert s.pass_env == ["ANTHROPIC_API_KEY"]


def test_env_is_built_from_nothing(tmp_path: Path) -> None:
    s = ClaudeCodeSettings(env_allowlist=["GH_TOKEN"], child_path="/usr/bin:/bin")
    source = {
        "ANTHROPIC_API_KEY": "k",
        "GH_TOKEN": "g",
        "AWS_SECRET_ACCESS_KEY": "no",
        "PATH": "/root/bin",
        "HOME": "/root",
    }
    env = build_env(s, ["GH_TOKEN"], tmp_path / "home", tmp_path / "tmp", "m1", source)
    assert env["ANTHROPIC_API_KEY"] == "k" and env["GH_TOKEN"] == "g"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PATH"] == "/usr/bin:/bin" and env["HOME"] == str(tmp_path / "home")
    assert env["TMPDIR"] == str(tmp_path / "tmp") and env[MARKER_ENV] == "m1"
    # Not requested: not passed, even though it is allow-listed.
    assert "GH_TOKEN" not in build_env(s, [], tmp_path, tmp_path, "m2", source)


def test_env_names_outside_the_allow_list_fail_permanently() -> None:
    s = ClaudeCodeSettings(env_allowlist=["GH_TOKEN"])
    check_env_names(s, ["GH_TOKEN", "ANTHROPIC_API_KEY"])
    with pytest.raises(PermanentError, match="AWS_SECRET_ACCESS_KEY, ZZ not in this worker's allow-list"):
        check_env_names(s, ["ZZ", "GH_TOKEN", "AWS_SECRET_ACCESS_KEY"])


def test_workspace_layout_ownership_and_removal(tmp_path: Path) -> None:
    run_as = RunAs(65534, 65534) if IS_ROOT else RunAs()
    ws = create_workspace(tmp_path / "root", "job/../1", 2, run_as)
    assert ws.path.parent == tmp_path / "root"  # the job id cannot steer the path
    assert (tmp_path / "root").stat().st_mode & 0o777 == 0o711
    for d in (ws.path, ws.work, ws.home, ws.tmp):
        st = d.stat()
        assert st.st_mode & 0o777 == 0o700
        assert st.st_uid == run_as.effective_uid
    # A child may leave unreadable directories behind; removal copes.
    locked = ws.work / "locked"
    (locked / "deep").mkdir(parents=True)
    (locked / "deep" / "f").write_text("x")
    os.chmod(locked / "deep", 0)
    os.chmod(locked, 0)
    remove_workspace(ws)
    assert not ws.path.exists()


def test_kept_workspaces_are_swept_after_their_time(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = create_workspace(root, "old", 1, RunAs())
    new = create_workspace(root, "new", 1, RunAs())
    running = create_workspace(root, "running", 1, RunAs())  # no marker: never swept
    now = time.time()
    keep_workspace(old, now - 100)
    keep_workspace(new, now - 5)
    assert sweep_kept(root, 60, now) == [old.path]
    assert not old.path.exists() and not old.kept_marker.exists()
    assert new.path.exists() and running.path.exists()


def test_kept_workspaces_are_bounded_in_count_and_size(tmp_path: Path) -> None:
    root = tmp_path / "root"
    now = time.time()
    kept = []
    for age in (10, 20, 30):  # newest first
        ws = create_workspace(root, f"age{age}", 1, RunAs())
        keep_workspace(ws, now - age)
        kept.append(ws)
    (kept[0].work / "big").write_bytes(b"x" * (256 << 10))
    removed = sweep_kept(root, 3600, now, max_count=2, max_bytes=128 << 10)
    # The oldest is past the count, the newest past the size; the middle one stays.
    assert sorted(removed) == sorted([kept[0].path, kept[2].path])
    assert kept[1].path.exists() and not kept[0].path.exists()


def test_the_kept_marker_lives_outside_the_workspace(tmp_path: Path) -> None:
    # The child owns the workspace; it must not be able to point the marker somewhere else.
    ws = create_workspace(tmp_path / "root", "j", 1, RunAs())
    assert ws.kept_marker.parent == ws.path.parent
    assert ws.kept_marker.name == ws.path.name + KEPT_SUFFIX
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    ws.kept_marker.symlink_to(victim)
    with pytest.raises(OSError):
        keep_workspace(ws)  # O_NOFOLLOW
    assert victim.read_text() == "keep me"


def test_limits_are_clamped_to_the_workers_own() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    pairs = dict(Limits(nofile=10**9, cpu_seconds=10).rlimits())
    expected = 10**9 if hard == resource.RLIM_INFINITY else min(10**9, hard)
    assert pairs[resource.RLIMIT_NOFILE] == (expected, expected)
    assert pairs[resource.RLIMIT_CPU] == (10, 15)  # SIGXCPU first, SIGKILL a little later
    assert pairs[resource.RLIMIT_CORE] == (0, 0)
    assert resource.RLIMIT_AS not in pairs  # None: inherited


def test_refuses_to_manage_our_own_process_group() -> None:
    with pytest.raises(ValueError, match="refusing"):
        ProcessGroup(os.getpgrp())
    with pytest.raises(ValueError, match="refusing"):
        ProcessGroup(1)


async def test_spawn_applies_limits_session_and_no_new_privs(tmp_path: Path) -> None:
    code = (
        "import os, resource\n"
        "print(os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], resource.getrlimit(resource.RLIMIT_CORE)[0])\n"
        "print([l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1])\n"
    )
    child = await spawn(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        run_as=RunAs(),
        limits=Limits(nofile=64),
    )
    assert child.proc.stdout is not None
    out = (await child.proc.stdout.read()).decode().split()
    assert await child.wait() == 0
    assert out == ["True", "True", "64", "0", "1"]


async def test_terminate_escalates_to_sigkill_and_finds_setsid_escapees(tmp_path: Path) -> None:
    ignore_term = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)\n"
    escape = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(600)\n"
        "time.sleep(600)\n"
    )
    marker = "test-marker-" + os.urandom(4).hex()
    env = {"PATH": "/usr/bin:/bin", MARKER_ENV: marker}
    leader = await spawn(
        [sys.executable, "-c", ignore_term], cwd=tmp_path, env=env, run_as=RunAs(), limits=Limits()
    )
    escaper = await spawn(
        [sys.executable, "-c", escape], cwd=tmp_path, env=env, run_as=RunAs(), limits=Limits()
    )
    assert leader.proc.stdout is not None and escaper.proc.stdout is not None
    assert (await leader.proc.stdout.readline()).strip() == b"ready"
    escaped_pid = int((await escaper.proc.stdout.readline()).strip())
    group = ProcessGroup(leader.pid, marker, os.geteuid())
    members = group.members()
    # By group, and by the run's marker (another session, so only the marker finds them).
    assert {leader.pid, escaper.pid, escaped_pid} <= set(members)
    await group.terminate(0.2, leader)
    assert leader.proc.returncode == -signal.SIGKILL  # it ignored SIGTERM, so SIGKILL
    assert await escaper.wait() == -signal.SIGTERM
    assert scan_processes(leader.pid, marker, os.geteuid()) == []


def test_protect_worker_process_makes_it_non_dumpable() -> None:
    # In a separate process: it is a one-way switch for the process that calls it.
    code = "from herder.processors.claude_code.sandbox import protect_worker_process as p; print(p())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_workspace_root_someone_else_planted_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RetryableError, match="not a directory owned by"):
        prepare_root(tmp_path / "link")
    if IS_ROOT:
        planted = tmp_path / "planted"
        planted.mkdir()
        os.chown(planted, 65534, 65534)
        with pytest.raises(RetryableError, match="not a directory owned by"):
            prepare_root(planted)


def test_an_uncreatable_workspace_root_is_a_clear_retryable_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(
        RetryableError, match=r"cannot create the workspace root.*HERDER_CLAUDE_WORKSPACE_ROOT"
    ):
        prepare_root(tmp_path / "file" / "root")


def test_ancestors_others_can_write_are_found(tmp_path: Path) -> None:
    from herder.processors.claude_code.sandbox import writable_by_others

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    root = shared / "private" / "root"
    root.mkdir(parents=True)
    found = writable_by_others(root)
    assert shared in found and root not in found and root.parent not in found
    assert ClaudeCodeSettings().workspace_root == Path("/var/lib/herder/claude")
    assert not any(p == Path("/var/lib") for p in writable_by_others(Path("/var/lib/herder/claude")))


def test_first_untraversable_finds_a_private_ancestor(shared_dir: Path) -> None:
    private = shared_dir / "private"
    (private / "inner").mkdir(parents=True)
    os.chmod(private, 0o700)
    assert first_untraversable(private / "inner", 65534, 65534) == private
    os.chmod(private, 0o711)
    assert first_untraversable(private / "inner", 65534, 65534) is None


# ---- bwrap ------------------------------------------------------------------------------------


def test_probe_reports_bwrap_here_and_says_why_when_it_is_missing() -> None:
    from herder.processors.claude_code.bwrap import probe

    missing = probe("/nonexistent/bwrap")
    assert missing.mode == "uid-drop" and not missing.sandboxed
    assert "install bubblewrap" in missing.reason
    # This machine has bubblewrap and unprivileged user namespaces (scripts/install-tools.sh).
    here = probe("bwrap", 65534 if IS_ROOT else None, 65534 if IS_ROOT else None)
    assert here.sandboxed, here.reason
    assert here.version and here.version.startswith("bubblewrap")
    assert here.limits.startswith("rlimits")


def test_wrap_unshares_everything_but_the_network_and_keeps_secrets_off_argv(tmp_path: Path) -> None:
    from herder.processors.claude_code.bwrap import wrap

    ws = tmp_path / "ws"
    argv = wrap("/usr/bin/bwrap", ["/usr/bin/claude", "-p"], workspace=ws, cwd=ws / "work", ro_binds=["/usr"])
    assert argv[:2] == ["/usr/bin/bwrap", "--unshare-all"] and "--share-net" in argv
    assert {"--die-with-parent", "--new-session"} <= set(argv)
    assert argv[argv.index("--") :] == ["--", "/usr/bin/claude", "-p"]
    # A private /tmp first, then the binds that may sit under it; the workspace is the only --bind.
    assert argv.index("--tmpfs") < argv.index("--bind")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"] == [str(ws)]
    assert "--setenv" not in argv and "ANTHROPIC_API_KEY" not in " ".join(argv)
    no_net = wrap("/usr/bin/bwrap", ["/x"], workspace=ws, cwd=ws, ro_binds=[], share_net=False)
    assert "--share-net" not in no_net


def test_worker_check_reports_the_sandbox_and_fails_when_it_is_required_but_missing(tmp_path: Path) -> None:
    def check(**env: str) -> subprocess.CompletedProcess[str]:
        full = dict(os.environ, HERDER_CLAUDE_WORKSPACE_ROOT=str(tmp_path / "ws"), **env)
        cmd = [sys.executable, "-m", "herder.cli", "worker", "default", "--check"]
        return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=120)

    here = check()
    assert here.returncode == 0 and "claude_code sandbox: bwrap (bubblewrap" in here.stdout, here.stdout
    assert "claude_code limits: rlimits" in here.stdout
    off = check(HERDER_CLAUDE_SANDBOX="none")
    assert off.returncode == 0 and "NOT SANDBOXED" in off.stdout and "lost: own PID namespace" in off.stdout
    required = check(HERDER_CLAUDE_SANDBOX="bwrap", HERDER_CLAUDE_BWRAP_BIN="/nonexistent/bwrap")
    assert required.returncode == 1 and "will refuse claude_code runs" in required.stdout
