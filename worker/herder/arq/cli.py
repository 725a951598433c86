"""arq's command line on Herder: `python -m herder.arq app.WorkerSettings [--burst] [--check]`
(also `herder arq ...`). Same options as arq's `arq` command."""

from __future__ import annotations

import logging.config
import os
import sys
from typing import Any

import click
from arq.utils import import_string
from arq.version import VERSION

from herder.arq.logs import default_log_config
from herder.arq.worker import check_health, run_worker

burst_help = "Batch mode: exit once no jobs are found in any queue."
health_check_help = "Health Check: run a health check and exit."
watch_help = "Not supported by herder.arq (use your process manager's reload)."
verbose_help = "Enable verbose output."
logdict_help = "Import path for a dictionary in logdict form, to configure Arq's own logging."


@click.command("arq")
@click.version_option(VERSION, "-V", "--version", prog_name="arq")
@click.argument("worker-settings", type=str, required=True)
@click.option("--burst/--no-burst", default=None, help=burst_help)
@click.option("--check", is_flag=True, help=health_check_help)
@click.option("--watch", type=click.Path(exists=True, dir_okay=True, file_okay=False), help=watch_help)
@click.option("-v", "--verbose", is_flag=True, help=verbose_help)
@click.option("--custom-log-dict", type=str, help=logdict_help)
def cli(
    *,
    worker_settings: str,
    burst: bool | None,
    check: bool,
    watch: str | None,
    verbose: bool,
    custom_log_dict: str,
) -> None:
    """
    Job queues in python with asyncio and redis.

    CLI to run the arq worker.
    """
    sys.path.append(os.getcwd())
    settings: Any = import_string(worker_settings)
    log_config = import_string(custom_log_dict) if custom_log_dict else default_log_config(verbose)
    logging.config.dictConfig(log_config)
    if watch:
        raise click.UsageError("--watch is not supported by herder.arq")
    if check:
        sys.exit(check_health(settings))
    kwargs = {} if burst is None else {"burst": burst}
    worker = run_worker(settings, **kwargs)
    if worker.exit_code:
        sys.exit(worker.exit_code)
