"""The task set a worker runs when no --app is given: the demo tasks and the built-in processors."""

from __future__ import annotations

from herder.demo import tasks as demo_tasks
from herder.tasks import TaskSet

tasks = TaskSet(demo_tasks)

try:  # the Claude Code processor lives in its own package
    from herder.processors import register  # type: ignore[import-not-found,unused-ignore]
    from herder.processors.claude_code import claude_code  # type: ignore[import-not-found,unused-ignore]

    register(tasks, claude_code)
except ImportError:  # pragma: no cover - only while the processor package is absent
    pass
