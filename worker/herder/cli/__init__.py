"""The `herder` command line (entry point `herder.cli:main`; `python -m herder.cli` too).

One module per command group, each registering on the root app in app.py:
  enqueue.py (enqueue, enqueue-many) · inspect.py (job, status, queues) ·
  operate.py (pause, resume, retry, remove, cancel, drain) · dlq.py (dlq ...) ·
  processes.py (worker, metrics, dashboard, up, version) · api.py (api, token ..., schema) ·
  acl.py (acl: a role's Redis ACL rule)
Shared options, settings and exit codes: common.py. Printing: render.py.

To add a command group: create a module that imports `app` from herder.cli.app and registers
commands (or `app.add_typer(...)`), then add its name to COMMAND_MODULES below (the order is
the order of `herder --help`)."""

from __future__ import annotations

import importlib

from herder.cli.app import app
from herder.cli.render import print_status

COMMAND_MODULES = (
    "arqcmd",
    "dlq",
    "enqueue",
    "inspect",
    "operate",
    "processes",
    "api",
    "acl",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"herder.cli.{_name}")


def main() -> None:
    app()


__all__ = ["app", "main", "print_status"]
