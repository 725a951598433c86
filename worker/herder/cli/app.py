"""The root `herder` Typer app. Command modules register on it (or add a sub-app) at import;
`herder.cli.__init__` imports them all."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer

# typer 0.29 vendors click: its exception classes live here (typer is pinned in pyproject).
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one line on stderr with exit 2,
    like every other bad input of the CLI, instead of click's boxed usage text."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except ClickException as exc:
            typer.echo(f"herder: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("herder: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors, add_completion=False, no_args_is_help=True, help="Herder: Redis-backed task queues."
)
