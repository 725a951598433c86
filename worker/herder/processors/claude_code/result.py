"""The documented shape of a `claude_code` job's result (the CLI's final `result` event), so
API clients get a typed result. Not used to validate: the CLI may add fields."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ClaudeCodeResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    result: str | None = None
    is_error: bool
    subtype: str | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    duration_api_ms: int | None = None
    total_cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    session_id: str | None = None
    permission_denials: list[Any] | None = None
    errors: list[Any] | None = None
    api_error: str | None = None
    api_error_status: int | None = None
