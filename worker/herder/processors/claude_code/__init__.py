"""The built-in `claude_code` task type: a headless Claude Code run in a sandboxed workspace.

    from herder.processors import register
    from herder.processors.claude_code import claude_code

    register(tasks, claude_code, max_attempts=3, timeout=3600)

Modules: `payload` (what a job asks for), `settings` (the worker's knobs, HERDER_CLAUDE_*),
`command` (payload → argv), `stream` (stream-json → progress and result), `classify`
(how a run failed), `sandbox` (workspace, environment, uid, rlimits, process-group kill),
`sources` (filling the workspace), `runner` (one CLI run), `processor` (all of it together).
"""

from __future__ import annotations

from herder.processors.claude_code.payload import (
    ClaudeCodePayload,
    EmptyWorkspace,
    GitWorkspace,
    PathWorkspace,
)
from herder.processors.claude_code.processor import ClaudeCodeProcessor
from herder.processors.claude_code.settings import ClaudeCodeSettings

__all__ = [
    "PROCESSOR",
    "ClaudeCodePayload",
    "ClaudeCodeProcessor",
    "ClaudeCodeSettings",
    "EmptyWorkspace",
    "GitWorkspace",
    "PathWorkspace",
    "claude_code",
]

claude_code = ClaudeCodeProcessor()
PROCESSOR = claude_code
