"""Worker-side configuration of the Claude Code processor (environment prefix ``HERDER_CLAUDE_``).

These are the operator's knobs, read on the worker; nothing here comes from a payload.
List settings accept a comma-separated string (``HERDER_CLAUDE_ENV_ALLOWLIST=GH_TOKEN,NPM_TOKEN``)
or a JSON list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GiB = 1 << 30
MiB = 1 << 20
# Kept here (not imported from bwrap.py) so that settings stay import-cycle free.
DEFAULT_RO_BINDS = (
    "/usr",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/gitconfig",
)

CsvList = Annotated[list[str], NoDecode]


class ClaudeCodeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERDER_CLAUDE_", extra="ignore")

    # The CLI: a name looked up on the worker's PATH, or a path.
    bin: str = "claude"
    # Fresh per-task workspaces are created under this directory. Not under /tmp: anyone can
    # plant a CLAUDE.md there, which the CLI reads from every directory above its cwd.
    workspace_root: Path = Path("/var/lib/herder/claude")
    # `{"kind": "path", "path": "x"}` sources resolve under this root; unset disables them.
    path_root: Path | None = None
    # Keep a failed task's workspace this long for debugging (0: remove at once).
    keep_on_failure_seconds: float = Field(default=3600.0, ge=0)
    # ... and never more than this many, nor one larger than this (swept at each run's start).
    keep_max_count: int = Field(default=20, ge=0)
    keep_max_bytes: int = Field(default=1 * GiB, ge=0)

    # Environment: the child starts from nothing. `pass_env` names are always passed when the
    # worker has them (the API key); `env_allowlist` names are passed when a payload asks.
    pass_env: CsvList = ["ANTHROPIC_API_KEY"]
    env_allowlist: CsvList = []
    fixed_env: dict[str, str] = {
        "DISABLE_AUTOUPDATER": "1",  # the install dir is not the task's to modify
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # The CLI's own default (10 retries, each request tried again) kept a slot busy for
        # 10-12 minutes with no network; Herder retries the job with its own backoff instead.
        "CLAUDE_CODE_MAX_RETRIES": "2",
        # Start-up failures (no key, bad settings) as typed `result` events, not bare stderr.
        "CLAUDE_CODE_STARTUP_FAILURE_RESULTS": "1",
    }
    child_path: str = "/usr/local/bin:/usr/bin:/bin"

    # One bubblewrap sandbox per run. "auto": bwrap where it works, else the uid-drop fallback
    # (logged loudly, reported by `herder worker --check`); "bwrap": refuse to run without it;
    # "none": the uid-drop path only (no namespaces).
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    bwrap_bin: str = "bwrap"
    # Read-only paths the sandbox sees besides /usr (and /bin, /lib... ) and the CLI's directory.
    sandbox_ro_binds: CsvList = list(DEFAULT_RO_BINDS)
    # The CLI must reach ANTHROPIC_BASE_URL; turn off only with a CLI that needs no network.
    sandbox_share_net: bool = True

    # --setting-sources when the payload does not choose: HOME is fresh, so "user" reads nothing
    # a run did not bring; "project"/"local" would run a repository's own hooks.
    setting_sources: CsvList = ["user"]
    # What a payload may ask for (a tenant trusting its own repository's settings).
    allowed_setting_sources: CsvList = ["user", "project", "local"]

    # Identity when the worker runs as root (nobody/nogroup by default).
    run_uid: int = Field(default=65534, gt=0)
    run_gid: int = Field(default=65534, gt=0)
    # When the worker is not root, runs share its uid: make the worker non-dumpable so they
    # cannot read its memory or /proc/PID/environ (Redis credentials).
    protect_worker: bool = True

    # Resource limits of the child and everything it starts (None: inherit the worker's).
    rlimit_cpu_seconds: int | None = Field(default=3600, gt=0)
    # Address space, not memory: JS runtimes reserve large ranges, so keep this generous and
    # rely on the pod's cgroup memory limit for the real cap.
    rlimit_as_bytes: int | None = Field(default=8 * GiB, gt=0)
    rlimit_nofile: int | None = Field(default=1024, gt=16)
    rlimit_fsize_bytes: int | None = Field(default=2 * GiB, gt=0)
    # RLIMIT_NPROC counts every process of the uid on the machine, not just this task's.
    rlimit_nproc: int | None = Field(default=1024, gt=8)

    # The workspace's disk cap (checked every disk_check_interval_seconds; None: no cap).
    workspace_max_bytes: int | None = Field(default=10 * GiB, gt=0)
    disk_check_interval_seconds: float = Field(default=2.0, gt=0, le=300)

    # SIGTERM, then SIGKILL after this grace period.
    kill_grace_seconds: float = Field(default=5.0, ge=0, le=300)
    progress_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    # The longest a finished run waits for its progress publisher (or any helper task) to stop.
    stop_bound_seconds: float = Field(default=10.0, gt=0, le=300)

    # Output bounds: memory used per task stays O(these), whatever the child prints.
    max_line_bytes: int = Field(default=4 * MiB, ge=4096)
    max_output_bytes: int = Field(default=256 * MiB, ge=4096)
    max_log_bytes: int = Field(default=4 * MiB, ge=1024)
    log_batch_events: int = Field(default=200, ge=1)
    stderr_tail_bytes: int = Field(default=64 * 1024, ge=1024)

    # Git sources.
    git_bin: str = "git"
    git_allowed_schemes: CsvList = ["https", "ssh"]
    git_timeout_seconds: float = Field(default=600.0, gt=0)

    @field_validator(
        "pass_env",
        "env_allowlist",
        "git_allowed_schemes",
        "sandbox_ro_binds",
        "setting_sources",
        "allowed_setting_sources",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [x.strip() for x in v.split(",") if x.strip()]
        return v
