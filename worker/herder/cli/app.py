"""The root `herder` Typer app. Command modules register on it (or add a sub-app) at import;
`herder.cli.__init__` imports them all."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Herder: Redis-backed task queues.")
