"""The operator's own configuration, from the environment (set by the chart, never by a TaskQueue).

These are the platform owner's decisions about what a TaskQueue author may ask for; a TaskQueue
cannot change them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERDER_OPERATOR_", extra="ignore")

    # Redis hosts (host or host:port, `*.` prefix for a domain) the operator connects to and lets
    # workers use; empty means any. Comma-separated in the environment.
    redis_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Let podTemplate fields that break the restricted Pod Security Standard through.
    allow_privileged_pods: bool = False
    # ServiceAccounts worker pods may run as (besides the namespace's default, with no token).
    allowed_service_accounts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("redis_allowed_hosts", "allowed_service_accounts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _csv(value)


def load() -> OperatorConfig:
    """Read at each use (not import) so a test or a restarted pod sees the current environment."""
    return OperatorConfig()
