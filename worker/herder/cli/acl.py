"""`herder acl ROLE`: print the least-privilege Redis ACL rule of a Herder role."""

from __future__ import annotations

from typing import Annotated

import typer

from herder.acl import ROLES, acl_rule
from herder.cli.app import app
from herder.cli.common import fail
from herder.errors import InvalidInput


@app.command()
def acl(
    role: Annotated[str, typer.Argument(help=f"One of: {', '.join(ROLES)}")],
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Queue the role serves (repeatable)")
    ] = None,
    user: Annotated[str | None, typer.Option(help="ACL user name (default: herder-ROLE[-QUEUE])")] = None,
    prefix: Annotated[str, typer.Option(envvar="HERDER_KEY_PREFIX", help="Key prefix")] = "herder",
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            envvar="HERDER_REDIS_CLUSTER",
            help="Redis Cluster: add what the cluster client needs",
        ),
    ] = False,
) -> None:
    """Print the `ACL SETUSER` line for ROLE (docs/security.md). Set the password separately."""
    try:
        typer.echo(acl_rule(role, queue or [], user=user, prefix=prefix, cluster=cluster))
    except InvalidInput as exc:
        fail(2, str(exc))
