"""`herder arq app.WorkerSettings [--burst] [--check] [-v]`: an arq app's worker on Herder,
with arq's own command-line options (the same as `python -m herder.arq`)."""

from __future__ import annotations

import typer

from herder.cli.app import app


@app.command(
    "arq",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def arq_worker(ctx: typer.Context) -> None:
    """Run an arq app (WorkerSettings) on Herder; `herder arq --help` for arq's options."""
    from herder.arq.cli import cli

    cli.main(args=list(ctx.args), prog_name="herder arq")
