"""The pure outcome classification of an attempt, and the client's import footprint."""

from __future__ import annotations

import json
import subprocess
import sys

from pydantic import BaseModel, ValidationError

from herder.errors import InvalidInput, PermanentError, RetryableError
from herder.worker.outcome import Attempt, failed, stopped

A = Attempt(attempt=2, worker_id="w1", started=100.0, timeout=5.0, backoff_json="")


def test_timeout_retries_with_backoff() -> None:
    o = failed(A, TimeoutError(), 105.0, 0.0)
    assert (o.outcome, o.reason) == ("retry", "timed out after 5.0 s")
    assert o.delay_ms == 2000  # default policy: 1 s * 2 ** (2 - 1), no jitter at u = 0
    rec = json.loads(o.data)
    assert rec["kind"] == "timeout" and rec["worker"] == "w1" and rec["ended_at"] == 105.0


def test_bad_input_and_permanent_errors_go_to_the_dlq() -> None:
    class M(BaseModel):
        n: int

    try:
        M.model_validate({"n": "x"})
    except ValidationError as exc:
        verr = exc
    for exc in (InvalidInput("no such task"), verr, PermanentError("nope")):
        o = failed(A, exc, 101.0, 0.0)
        assert o.outcome == "dead" and o.delay_ms == 0
        assert json.loads(o.data)["kind"] == "permanent"


def test_retryable_hint_wins_over_the_policy() -> None:
    assert failed(A, RetryableError("later", delay=7.5), 101.0, 1.0).delay_ms == 7500
    o = failed(A, ValueError("boom"), 101.0, 0.0)
    assert (o.outcome, o.reason, o.delay_ms) == ("retry", "ValueError: boom", 2000)


def test_stopped_jobs_are_cancelled_or_handed_back() -> None:
    assert stopped(A, "cancelled", 101.0).outcome == "cancelled"
    o = stopped(A, "handback", 101.0)
    assert o.outcome == "handback" and json.loads(o.data)["kind"] == "handed_back"


def test_client_without_a_taskset_does_not_load_processors() -> None:
    code = (
        "import sys; from herder.client import HerderClient; HerderClient(); "
        "import herder_operator.reconciler; "
        "print(sorted(m for m in sys.modules if m.startswith('herder.processors')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
