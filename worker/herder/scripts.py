"""Loads the Lua scripts (each prefixed with lua/common.lua) and registers them on a client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "finish",
    "cancel",
    "remove",
    "replay",
    "status",
    "drain",
    "progress",
    "resume",
)


@cache
def script_source(name: str) -> str:
    lua = resources.files("herder") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass
class Scripts:
    enqueue: AsyncScript
    claim: AsyncScript
    finish: AsyncScript
    cancel: AsyncScript
    remove: AsyncScript
    replay: AsyncScript
    status: AsyncScript
    drain: AsyncScript
    progress: AsyncScript
    resume: AsyncScript

    @classmethod
    def register(cls, redis: Any) -> Scripts:
        return cls(**{name: redis.register_script(script_source(name)) for name in SCRIPT_NAMES})
