from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herder.backoff import Backoff, retry_delay


def test_exponential_without_jitter() -> None:
    p = Backoff(base_seconds=1, factor=2, max_seconds=10, jitter=0)
    assert [retry_delay(p, n, 0.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@given(
    base=st.floats(0, 100),
    factor=st.floats(1, 10),
    cap=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 10_000),
    u=st.floats(-1, 1),
)
def test_delay_is_bounded_by_cap_and_jitter(
    base: float, factor: float, cap: float, jitter: float, attempt: int, u: float
) -> None:
    p = Backoff(base_seconds=base, factor=factor, max_seconds=cap, jitter=jitter)
    d = retry_delay(p, attempt, u)
    assert 0 <= d <= cap
    nominal = retry_delay(Backoff(base_seconds=base, factor=factor, max_seconds=cap, jitter=0), attempt, 0.0)
    assert d >= nominal * (1 - jitter) - 1e-9


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        retry_delay(Backoff(), 0, 0.0)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
