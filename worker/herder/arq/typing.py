"""arq's typing helpers, re-exported."""

from arq.typing import (
    SecondsTimedelta,
    StartupShutdown,
    WorkerCoroutine,
    WorkerSettingsBase,
    WorkerSettingsType,
)

__all__ = [
    "SecondsTimedelta",
    "StartupShutdown",
    "WorkerCoroutine",
    "WorkerSettingsBase",
    "WorkerSettingsType",
]
