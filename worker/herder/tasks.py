"""Declaring tasks: a `TaskSet` maps task names to async functions and their payload models.

Clients validate payloads against the same models at enqueue time, so a worker never sees
a payload its task would reject.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from herder.backoff import Backoff
from herder.cron import check_cron
from herder.errors import InvalidInput
from herder.keys import TASK_RE, valid_task_name

CAPABILITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_MAX_ATTEMPTS = 3
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB; large inputs belong in object storage, not the queue
# One encoder, not one per payload (json.dumps builds one whenever it gets options).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


@dataclass
class JobContext:
    """What a running task gets besides its payload."""

    job_id: str
    queue: str
    task: str
    attempt: int
    max_attempts: int
    worker_id: str
    state: dict[str, Any]  # arq's worker ctx (on_startup may put shared clients here)
    _progress: Callable[[dict[str, Any]], Awaitable[None]]
    _log: Callable[[list[dict[str, Any]]], Awaitable[None]]
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def progress(self, data: dict[str, Any]) -> None:
        """Publish a progress summary; `herder job ID --follow` shows it live."""
        await self._progress(data)

    async def log(self, events: list[dict[str, Any]]) -> None:
        """Append events to the job's (size-capped) event log."""
        await self._log(events)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


TaskFn = Callable[[JobContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Task:
    name: str
    fn: TaskFn
    payload_model: type[BaseModel] | None = None
    # Documents what the task returns (JSON Schema for API clients); results are not validated.
    result_model: type[BaseModel] | None = None
    # None: not declared, so a job enqueued from this definition carries none and the worker
    # running it applies its own task's value at claim time (a producer need not know it).
    max_attempts: int | None = None
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    capabilities: tuple[str, ...] = ()
    cron: str | None = None
    cron_payload: dict[str, Any] | None = None

    @property
    def attempts_limit(self) -> int:
        """The attempts a job of this task gets when it carries no max_attempts of its own."""
        return DEFAULT_MAX_ATTEMPTS if self.max_attempts is None else self.max_attempts

    def validate_payload(self, payload: Any) -> Any:
        """Return the JSON-ready payload, or raise InvalidInput with the model's reasons."""
        return self._checked_payload(payload)[0]

    def encode_payload(self, payload: Any) -> str:
        """The payload as stored (compact JSON), validated as by validate_payload."""
        return self._checked_payload(payload)[1]

    def _checked_payload(self, payload: Any) -> tuple[Any, str]:
        if self.payload_model is None:
            data = payload
        else:
            try:
                model = self.payload_model.model_validate({} if payload is None else payload)
            except ValidationError as exc:
                reasons = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or '<payload>'}: {e['msg']}" for e in exc.errors()
                )
                raise InvalidInput(f"invalid payload for task '{self.name}': {reasons}") from None
            data = model.model_dump(mode="json")
        try:
            # allow_nan=False: NaN/Infinity are not JSON; other readers (JS, jq) reject them.
            encoded = _COMPACT_JSON.encode(data)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"payload for task '{self.name}' is not JSON-serialisable: {exc}") from None
        except RecursionError:
            raise InvalidInput(f"payload for task '{self.name}' is nested too deeply") from None
        if len(encoded) > MAX_PAYLOAD_BYTES:
            raise InvalidInput(
                f"payload for task '{self.name}' is {len(encoded)} bytes; limit {MAX_PAYLOAD_BYTES}"
            )
        return data, encoded

    def parse_payload(self, data: Any) -> Any:
        if self.payload_model is None:
            return data
        return self.payload_model.model_validate({} if data is None else data)


class TaskSet:
    """A registry of tasks. Workers run them; clients validate against them."""

    def __init__(self, *includes: TaskSet) -> None:
        self._tasks: dict[str, Task] = {}
        for other in includes:
            self.include(other)

    def include(self, other: TaskSet) -> None:
        for t in other:
            self.add(t)

    def add(self, t: Task) -> Task:
        """Register a task; everything a worker would trip over later is checked here, at import."""
        if not valid_task_name(t.name):
            raise InvalidInput(f"invalid task name {t.name!r}: must match {TASK_RE.pattern}")
        if t.max_attempts is not None and t.max_attempts < 1:
            raise InvalidInput(f"task {t.name}: max_attempts must be >= 1")
        for cap in t.capabilities:
            if not isinstance(cap, str) or not CAPABILITY_RE.fullmatch(cap):
                raise InvalidInput(f"task {t.name}: invalid capability {cap!r}")
        if t.cron is not None:
            try:
                check_cron(t.cron)
            except InvalidInput as exc:
                raise InvalidInput(f"task {t.name}: {exc}") from None
            t.validate_payload(t.cron_payload)  # the payload every tick will carry
        elif t.cron_payload is not None:
            raise InvalidInput(f"task {t.name}: cron_payload given without cron")
        self._tasks[t.name] = t
        return t

    def task(
        self,
        name: str | None = None,
        *,
        payload: type[BaseModel] | None = None,
        result: type[BaseModel] | None = None,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        capabilities: tuple[str, ...] = (),
        cron: str | None = None,
        cron_payload: dict[str, Any] | None = None,
    ) -> Callable[[TaskFn], TaskFn]:
        def decorate(fn: TaskFn) -> TaskFn:
            self.add(
                Task(
                    name=name or fn.__name__,
                    fn=fn,
                    payload_model=payload,
                    result_model=result,
                    max_attempts=max_attempts,
                    backoff=backoff or Backoff(),
                    timeout=timeout,
                    capabilities=tuple(capabilities),
                    cron=cron,
                    cron_payload=cron_payload,
                )
            )
            return fn

        return decorate

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise InvalidInput(f"unknown task '{name}' (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._tasks.values()))

    def names(self) -> list[str]:
        return sorted(self._tasks)


def load_taskset(spec: str | None) -> TaskSet:
    """Load `module` or `module:attr` (attr defaults to `tasks`); None means the built-in tasks."""
    if not spec:
        from herder.builtin import tasks as builtin

        return builtin
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(f"cannot import app module '{module_name}': {exc}") from None
    obj = getattr(module, attr or "tasks", None)
    if not isinstance(obj, TaskSet):
        raise InvalidInput(f"'{spec}' is not a herder.TaskSet (define `tasks = TaskSet()` in the module)")
    return obj
