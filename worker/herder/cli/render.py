"""How the CLI prints jobs, queue status and the DLQ (rich tables for people, JSON for scripts)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from herder.models import Job, QueueStatus

out = Console()


def job_dict(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


def print_job(j: Job) -> None:
    t = Table(show_header=False, box=None)
    for k, v in job_dict(j).items():
        if v not in (None, [], {}):
            t.add_row(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
    out.print(t)


def print_job_update(j: Job, as_json: bool) -> None:
    """One line per change while following a job."""
    if as_json:
        typer.echo(json.dumps({"state": j.state, "attempts": j.attempts, "progress": j.progress}))
    else:
        typer.echo(f"{time.strftime('%H:%M:%S')} {j.state} attempt={j.attempts} {j.progress or ''}")


def print_status(st: QueueStatus) -> None:
    out.print(
        f"[bold]{st.queue}[/] ready={st.ready} scheduled={st.scheduled} waiting={st.waiting} "
        f"active={st.active} dead={st.dead}{' [yellow]PAUSED[/]' if st.paused else ''}"
    )
    t = Table("worker", "capacity", "in flight", "draining", "last seen (s ago)")
    for w in st.workers:
        ago = f"{st.now - w.last_seen:.1f}" if w.last_seen else "?"
        t.add_row(w.id, str(w.capacity), str(w.in_flight), "yes" if w.draining else "", ago)
    out.print(t)


def print_dead(jobs: Iterable[Job]) -> None:
    t = Table("id", "task", "attempts", "reason")
    for j in jobs:
        t.add_row(j.id, j.task, str(j.attempts), j.dead_reason or "")
    out.print(t)
