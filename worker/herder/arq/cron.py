"""arq's `cron()` and its schedule arithmetic, unchanged; Herder's worker runs the jobs."""

from arq.cron import CronJob, Options, cron, next_cron

__all__ = ["CronJob", "Options", "cron", "next_cron"]
