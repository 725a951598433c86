"""Stopping: drains (on a signal or on request through Redis), the second-signal stop, handing
running jobs back (their leases released at once, never left to time out), leaving the registry."""

from __future__ import annotations

import contextlib
import signal
import time

from redis.exceptions import RedisError

from herder.logs import get_logger
from herder.worker.health import OUTAGE_ERRORS
from herder.worker.state import WorkerState

log = get_logger("herder.worker")

# After handing jobs back at shutdown, how long to keep trying to write that to Redis.
GIVE_UP_AFTER_HAND_BACK_S = 10.0


class ShutdownMixin(WorkerState):
    def _done(self) -> bool:
        if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
            return True  # jobs handed back but Redis never took the hand-back: see main()
        if self.stop_now and not self.running:
            return True
        if self.draining and self.exit_when_drained and not self.running:
            return True
        return bool(self.burst and self._burst_idle)

    async def close(self) -> None:
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    def handle_sig(self, signum: int) -> None:
        """First SIGTERM/SIGINT: drain (bounded by the drain timeout). Second: stop at once,
        handing every running job back."""
        sig = signal.Signals(signum).name
        if self.draining and self.drain_source == "signal":
            log.warning(
                "second signal: stopping now, handing jobs back", signal=sig, in_flight=len(self.running)
            )
            self._hand_back_all()
            self.stop_now = True
        else:
            log.info(
                "draining on signal", signal=sig, in_flight=len(self.running), timeout_s=self.drain_timeout
            )
            # Already draining on request (the operator drains, then deletes the pod): the
            # timeout counts from when the drain began, not from the signal.
            started = self._drain_started if self.draining and self._drain_started else time.monotonic()
            self.draining = True
            self._drain_started = started
            self.drain_source = "signal"
            self.exit_when_drained = True
            self.drain_deadline = started + self.drain_timeout
            self._next_hb = 0.0  # tell the registry now
        self.stop_event.set()
        self.slot_event.set()

    def _hand_back_all(self) -> None:
        if self._give_up_at is None:
            self._give_up_at = time.monotonic() + GIVE_UP_AFTER_HAND_BACK_S
        for r in self.running.values():
            r.stop("handback")

    def _apply_control(self, draining: int, lost: list[str], cancels: list[str]) -> None:
        """Apply what the claim call reported: drain requests, leases lost, cancel requests."""
        if draining and not self.draining:
            log.info("draining on request", worker=self.worker_id, in_flight=len(self.running))
            self.draining, self.drain_source = True, "redis"
            self._drain_started = time.monotonic()
            self._next_hb = 0.0
        elif not draining and self.draining and self.drain_source == "redis":
            log.info("drain cancelled", worker=self.worker_id)
            self.draining, self.drain_source, self.exit_when_drained = False, None, False
            self._drain_started = None
        if self.drain_source == "redis":
            self.exit_when_drained = draining == 2
        for jid in lost:
            r = self.running.get(jid)
            if r and r.stop("lost"):
                log.warning("lease lost: another worker owns this job now; stopping our copy", job=jid)
        for jid in cancels:
            r = self.running.get(jid)
            if r and r.stop("cancelled"):
                log.info("cancel requested", job=jid)
                r.ctx.cancel_event.set()

    async def _leave(self) -> None:
        """Remove this worker from the registry on a clean exit."""
        with contextlib.suppress(*OUTAGE_ERRORS, RedisError):
            # Not a transaction (redis-py's cluster client has none): a crash between the two
            # leaves a worker hash that nothing lists (the registry is the zset) and that
            # expires by its TTL.
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keyspace.workers, self.worker_id)
                pipe.delete(self.keyspace.worker(self.worker_id), self.keyspace.control(self.worker_id))
                await pipe.execute()
        log.info(
            "worker stopped", worker=self.worker_id, completed=self.jobs_complete, failed=self.jobs_failed
        )
