"""An arq app as arq's docs write one; the only change for Herder is the import line."""

import asyncio
import os

from herder.arq import cron, func  # was: from arq import cron, func
from herder.arq.connections import RedisSettings  # was: from arq.connections import RedisSettings


async def startup(ctx):
    ctx["started_by"] = f"pid-{os.getpid()}"


async def work(ctx, n, pause=0.5):
    await asyncio.sleep(pause)
    return {"n": n * 2, "worker": ctx["started_by"], "try": ctx["job_try"]}


async def heartbeat(ctx):
    await ctx["redis"].set("arq_app:cron_ran", ctx["job_id"])


class WorkerSettings:
    functions = [func(work, name="work", timeout=60)]
    cron_jobs = [cron(heartbeat, name="heartbeat", second={0, 30}, run_at_startup=True)]
    on_startup = startup
    redis_settings = RedisSettings.from_dsn(os.environ.get("HERDER_REDIS_URL", "redis://localhost:6379"))
    max_jobs = 3
