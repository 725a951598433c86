"""The `claude_code` payload: validated at enqueue time, so bad input never reaches a worker.

Everything here is checkable without the worker's configuration: a path source is *relative*
to the worker's root (so escaping it is a syntax error, caught at enqueue), and the worker
re-checks it after resolving symlinks. Checks that need the worker's configuration (is this
environment name allow-listed, is this git scheme enabled) happen when the task runs and
fail it permanently.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_PROMPT_BYTES = 256 * 1024
# Passed on argv; one argv string may not exceed MAX_ARG_STRLEN (128 KiB) on Linux.
MAX_SYSTEM_PROMPT_BYTES = 64 * 1024
MAX_TOOLS = 100
MAX_ENV_NAMES = 64
MAX_TIMEOUT_SECONDS = 24 * 3600

# Names the sandbox sets itself (or that change how binaries load): never taken from a payload.
RESERVED_ENV_NAMES = frozenset({"HOME", "PATH", "TMPDIR", "PWD", "USER", "LOGNAME", "SHELL", "HERDER_RUN_ID"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,199}")
# Schemes git may be asked to use; the worker narrows this further (git_allowed_schemes).
# Never `ext::` / `fd::` (they run commands) or a bare local path.
GIT_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._/~-][^\s]*")

SettingSource = Literal["user", "project", "local"]
PermissionMode = Literal["default", "manual", "acceptEdits", "auto", "bypassPermissions", "dontAsk", "plan"]


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("contains a NUL byte")
    return v


def _no_option_like(v: str) -> str:
    # A value starting with '-' would be parsed as an option by the CLI or by git.
    if v.startswith("-"):
        raise ValueError("must not start with '-'")
    return v


def _max_bytes(limit: int) -> AfterValidator:
    def check(v: str) -> str:
        n = len(v.encode("utf-8"))
        if n > limit:
            raise ValueError(f"is {n} bytes (UTF-8); the limit is {limit}")
        return v

    return AfterValidator(check)


def _single_line(v: str) -> str:
    if any(c in v for c in "\r\n"):
        raise ValueError("must be a single line")
    return v


NoNulStr = Annotated[str, AfterValidator(_no_nul)]
Prompt = Annotated[NoNulStr, Field(min_length=1), _max_bytes(MAX_PROMPT_BYTES)]
SystemPromptAppend = Annotated[NoNulStr, Field(min_length=1), _max_bytes(MAX_SYSTEM_PROMPT_BYTES)]
ToolSpec = Annotated[
    NoNulStr,
    Field(min_length=1, max_length=512),
    AfterValidator(_single_line),
    AfterValidator(_no_option_like),
]


def _model_name(v: str) -> str:
    if not _MODEL.fullmatch(v):
        raise ValueError("must be a model alias or id (letters, digits and ._:/@[]-)")
    return v


def _env_name(v: str) -> str:
    if not _ENV_NAME.fullmatch(v):
        raise ValueError(f"{v!r} is not an environment variable name")
    if v in RESERVED_ENV_NAMES or v.startswith("LD_"):
        raise ValueError(f"{v!r} is set by the sandbox and cannot be passed through")
    return v


EnvName = Annotated[NoNulStr, AfterValidator(_env_name)]


def _relative_path(v: str) -> str:
    if not v or v.strip() != v:
        raise ValueError("must be a non-empty path without surrounding whitespace")
    p = PurePosixPath(v)
    if p.is_absolute():
        raise ValueError("must be relative to the worker's path root (HERDER_CLAUDE_PATH_ROOT)")
    if ".." in p.parts:
        raise ValueError("must not contain '..' (it would escape the path root)")
    if any(c in v for c in "\r\n"):
        raise ValueError("must be a single line")
    return str(p)


def _git_url(v: str) -> str:
    if any(c.isspace() for c in v):
        raise ValueError("must not contain whitespace")
    if "://" in v:
        parts = urlsplit(v)
        if parts.scheme not in GIT_SCHEMES:
            raise ValueError(f"scheme {parts.scheme!r} is not allowed (one of {sorted(GIT_SCHEMES)})")
        if parts.scheme != "file" and not parts.hostname:
            raise ValueError("has no host")
        return v
    if _SCP_LIKE.fullmatch(v):  # git@github.com:org/repo.git
        return v
    raise ValueError("must be a URL (https://, ssh://, ...) or user@host:path")


def _git_ref(v: str) -> str:
    # A subset of git-check-ref-format, plus full or abbreviated commit ids.
    bad = ("..", "@{", "//", "\\", "~", "^", ":", "?", "*", "[")
    if any(b in v for b in bad) or v.endswith((".", "/", ".lock")) or v.startswith("/"):
        raise ValueError("is not a valid git ref name")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == " " for c in v):
        raise ValueError("is not a valid git ref name")
    return v


class EmptyWorkspace(BaseModel):
    """Start in an empty directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["empty"] = "empty"


class GitWorkspace(BaseModel):
    """Shallow-fetch `ref` (branch, tag or commit id; default: the remote's HEAD) of `url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["git"]
    url: Annotated[
        NoNulStr,
        Field(min_length=1, max_length=2048),
        AfterValidator(_no_option_like),
        AfterValidator(_git_url),
    ]
    ref: (
        Annotated[
            NoNulStr,
            Field(min_length=1, max_length=255),
            AfterValidator(_no_option_like),
            AfterValidator(_git_ref),
        ]
        | None
    ) = None


class PathWorkspace(BaseModel):
    """Copy a directory, given relative to the worker's HERDER_CLAUDE_PATH_ROOT, into the workspace."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["path"]
    path: Annotated[NoNulStr, Field(max_length=4096), AfterValidator(_relative_path)]


WorkspaceSource = Annotated[EmptyWorkspace | GitWorkspace | PathWorkspace, Field(discriminator="kind")]


class ClaudeCodePayload(BaseModel):
    """What one `claude_code` job asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: Prompt
    append_system_prompt: SystemPromptAppend | None = None
    model: Annotated[NoNulStr, AfterValidator(_model_name)] | None = None
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    max_budget_usd: float | None = Field(default=None, gt=0, le=100_000)
    allowed_tools: list[ToolSpec] = Field(default_factory=list, max_length=MAX_TOOLS)
    disallowed_tools: list[ToolSpec] = Field(default_factory=list, max_length=MAX_TOOLS)
    permission_mode: PermissionMode | None = None
    # Which settings files the CLI reads (--setting-sources). None: the worker's default, "user"
    # only (a fresh HOME), so a repository's .claude/settings.json hooks do not run unless asked.
    setting_sources: list[SettingSource] | None = Field(default=None, min_length=1, max_length=3)
    workspace: WorkspaceSource = Field(default_factory=EmptyWorkspace)
    env: list[EnvName] = Field(default_factory=list, max_length=MAX_ENV_NAMES)
    # Wall-clock budget of the whole run (clone included); exceeding it fails the job for good.
    timeout: float = Field(default=1800.0, gt=0, le=MAX_TIMEOUT_SECONDS)
