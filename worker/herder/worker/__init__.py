"""The worker runtime, one module per concern:

- loop.py         `HerderWorker` (arq's Worker shell) and its claim loop; running one job; `run_worker`
- outcome.py      pure classification of how an attempt ended (ok/retry/dead/cancelled/handback)
- finishing.py    batched, lease-fenced writes of finished attempts
- shutdown.py     drain (signal or Redis request), second-signal stop, hand-back, leaving the registry
- health.py       Redis outage handling, persistence warning, event-loop watchdog
- progress.py     progress and event-log writes of a running job
- cron.py         which cron ticks to enqueue (pure)
- arq_adapter.py  Herder tasks as arq functions
- state.py        the state the mixins share, and `Running`
"""

from __future__ import annotations

from herder.worker.health import OUTAGE_ERRORS
from herder.worker.loop import HerderWorker, default_worker_id, run_worker
from herder.worker.state import Running

__all__ = ["OUTAGE_ERRORS", "HerderWorker", "Running", "default_worker_id", "run_worker"]
