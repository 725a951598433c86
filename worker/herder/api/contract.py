"""The typed contract: one submission model per task (its payload model plus the enqueue
options), their JSON Schemas, and the OpenAPI components built from them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from herder.client import JobRequest
from herder.models import EnqueueResult
from herder.tasks import Task, TaskSet

REF = "#/components/schemas/{model}"


def _model_name(task: str, taken: set[str]) -> str:
    base = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", task) if p) or "Task"
    name, n = f"Submit{base}", 2
    while name in taken:
        name, n = f"Submit{base}{n}", n + 1
    taken.add(name)
    return name


def submission_model(task: Task, name: str) -> type[BaseModel]:
    """JobRequest with `task` pinned to this task's name and `payload` typed by its model."""
    payload_type: Any = task.payload_model if task.payload_model is not None else Any
    model: type[BaseModel] = create_model(
        name,
        __base__=JobRequest,
        __doc__=f"Submit a '{task.name}' job.",
        task=(Literal[task.name], ...),  # type: ignore[arg-type]
        payload=(payload_type | None, None),
    )
    return model


class Contract:
    """Submission validation and schemas for one TaskSet (built once per app)."""

    def __init__(self, tasks: TaskSet) -> None:
        self.tasks = tasks
        taken: set[str] = set()
        self.models = {t.name: submission_model(t, _model_name(t.name, taken)) for t in tasks}
        models = list(self.models.values())
        one: Any
        if not models:
            one = None
        elif len(models) == 1:
            one = models[0]
        else:
            one = Annotated[_union(models), Field(discriminator="task")]
        self.submission: Any = one
        self.batch: TypeAdapter[Any] | None = TypeAdapter(list[one]) if one is not None else None

    def validate(self, items: list[Any]) -> list[JobRequest]:
        """Validate raw submissions; raises pydantic.ValidationError with every problem."""
        if self.batch is None:
            raise ValueError("this server has no tasks registered")
        self.batch.validate_python(items)
        # Hand the client the caller's own fields, so it validates exactly as `enqueue` does.
        return [JobRequest.model_validate(raw) for raw in items]

    def components(self) -> dict[str, Any]:
        """JSON Schemas for the OpenAPI document: each task's submission, payload and result."""
        out: dict[str, Any] = {}
        for t in self.tasks:
            schema = TypeAdapter(self.models[t.name]).json_schema(ref_template=REF, mode="validation")
            out.update(schema.pop("$defs", {}))
            out[self.models[t.name].__name__] = schema
        return out

    def submission_schema(self) -> dict[str, Any]:
        refs = [{"$ref": REF.format(model=m.__name__)} for m in self.models.values()]
        mapping = {name: REF.format(model=m.__name__) for name, m in self.models.items()}
        one: dict[str, Any] = (
            {"oneOf": refs, "discriminator": {"propertyName": "task", "mapping": mapping}}
            if len(refs) > 1
            else (refs[0] if refs else {})
        )
        return {
            "oneOf": [
                one,
                {
                    "type": "object",
                    "title": "Batch",
                    "properties": {"jobs": {"type": "array", "items": one, "maxItems": 10_000}},
                    "required": ["jobs"],
                    "additionalProperties": False,
                },
            ]
        }


def _union(models: list[type[BaseModel]]) -> Any:
    from typing import Union

    return Union[tuple(models)]  # noqa: UP007 - built at run time from a list


def task_schemas(tasks: TaskSet) -> dict[str, dict[str, Any]]:
    """What `herder schema` prints: per task, the JSON Schema of its payload and result."""
    out: dict[str, dict[str, Any]] = {}
    for t in sorted(tasks, key=lambda t: t.name):
        out[t.name] = {
            "payload": t.payload_model.model_json_schema() if t.payload_model else {},
            "result": t.result_model.model_json_schema() if t.result_model else {},
        }
    return out


class DurabilityInfo(BaseModel):
    """What the answer confirms beyond "Redis has it in memory"."""

    fsync: bool
    replicas: int


class Submitted(EnqueueResult):
    durability: DurabilityInfo | None = None


class SubmittedBatch(BaseModel):
    jobs: list[EnqueueResult]
    durability: DurabilityInfo | None = None


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    max_attempts: int
    timeout: float | None
    capabilities: list[str]
    payload_schema: dict[str, Any]
    result_schema: dict[str, Any]
