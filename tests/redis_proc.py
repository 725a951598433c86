"""The tests' redis-server: herder's LocalRedis, persistence off unless a test asks for it."""

from __future__ import annotations

from pathlib import Path

from herder.localredis import LocalRedis, free_port

__all__ = ["RedisProc", "free_port"]


class RedisProc(LocalRedis):
    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra: list[str] | None = None,
    ) -> None:
        super().__init__(directory, port, appendonly=appendonly, appendfsync=appendfsync, extra=extra)
