"""Payload → argv for the CLI's headless mode. Pure.

The prompt is never on argv: argv is world-readable in /proc and limited in size, so the
runner writes the prompt to the child's stdin (`claude -p` reads it from there).
"""

from __future__ import annotations

from herder.processors.claude_code.payload import ClaudeCodePayload

HEADLESS_FLAGS = ("-p", "--output-format", "stream-json", "--verbose")


def format_usd(amount: float) -> str:
    """A plain decimal (never exponent notation, which the CLI would not parse)."""
    text = f"{amount:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def build_argv(
    binary: str, payload: ClaudeCodePayload, setting_sources: list[str] | None = None
) -> list[str]:
    """`setting_sources`: the worker's default, used when the payload does not choose."""
    argv = [binary, *HEADLESS_FLAGS]
    sources = payload.setting_sources if payload.setting_sources is not None else setting_sources
    if sources is not None:
        # -p skips the trust dialog, so project settings (hooks!) would otherwise just run.
        argv += ["--setting-sources", ",".join(dict.fromkeys(sources))]
    if payload.model is not None:
        argv += ["--model", payload.model]
    if payload.max_turns is not None:
        argv += ["--max-turns", str(payload.max_turns)]
    if payload.max_budget_usd is not None:
        argv += ["--max-budget-usd", format_usd(payload.max_budget_usd)]
    if payload.append_system_prompt is not None:
        argv += ["--append-system-prompt", payload.append_system_prompt]
    if payload.permission_mode is not None:
        argv += ["--permission-mode", payload.permission_mode]
    # Variadic options: one flag, then each tool spec as its own argument (specs may hold spaces).
    if payload.allowed_tools:
        argv += ["--allowedTools", *payload.allowed_tools]
    if payload.disallowed_tools:
        argv += ["--disallowedTools", *payload.disallowed_tools]
    return argv
