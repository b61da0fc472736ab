"""Retry decisions: attempt limits, capped exponential backoff, jitter bounds, Retry-After."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.engine import RETRY_AFTER_CAP_SECONDS, RetryDecision, RetryPolicy, decide_retry, idempotency_key
from hub.engine.retry import backoff_delay

NO_JITTER = RetryPolicy(max_attempts=10, backoff_seconds=1, multiplier=2, max_backoff_seconds=60, jitter=0)


def mid() -> float:
    return 0.5  # jitter factor exactly 1


def test_idempotency_key():
    expected = hashlib.sha256(b"run-1:fetch:2").hexdigest()
    assert idempotency_key("run-1", "fetch", 2) == expected
    assert idempotency_key(17, "fetch", 1) == hashlib.sha256(b"17:fetch:1").hexdigest()
    assert len({idempotency_key("r", "n", a) for a in range(1, 50)}) == 49


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (9, 60.0)]
)
def test_exponential_backoff_capped(attempt, delay):
    assert decide_retry(NO_JITTER, attempt, True, rand=mid) == RetryDecision(
        True, delay, f"attempt {attempt} of 10 failed; retrying in {delay:.2f}s"
    )


@pytest.mark.parametrize(("attempt", "retry"), [(1, True), (2, True), (3, False), (4, False)])
def test_attempt_limit(attempt, retry):
    decision = decide_retry(RetryPolicy(max_attempts=3), attempt, True, rand=mid)
    assert decision.retry is retry
    if not retry:
        assert decision.delay_seconds == 0 and "gave up" in decision.reason


def test_single_attempt_policy_never_retries():
    assert not decide_retry(RetryPolicy(max_attempts=1), 1, True).retry


def test_non_retryable_errors_are_not_retried():
    decision = decide_retry(RetryPolicy(), 1, False, retry_after=5)
    assert decision == RetryDecision(False, 0.0, "the error is not retryable")


@pytest.mark.parametrize(("r", "delay"), [(0.0, 3.6), (0.5, 4.0), (1.0, 4.4)])
def test_jitter_is_a_symmetric_fraction(r, delay):
    policy = RetryPolicy(max_attempts=5, backoff_seconds=1, multiplier=2, jitter=0.1)
    assert decide_retry(policy, 3, True, rand=lambda: r).delay_seconds == pytest.approx(delay)


def test_jitter_never_exceeds_max_backoff():
    policy = RetryPolicy(max_attempts=20, backoff_seconds=1, multiplier=2, max_backoff_seconds=10, jitter=0.5)
    assert decide_retry(policy, 10, True, rand=lambda: 1.0).delay_seconds == 10
    assert decide_retry(policy, 10, True, rand=lambda: 0.0).delay_seconds == 5


@pytest.mark.parametrize(
    ("retry_after", "delay", "why"),
    [
        (None, 1.0, ""),
        (0.5, 1.0, ""),  # shorter than the backoff: backoff wins
        (30.0, 30.0, " as the server asked"),
        (600.0, 600.0, " as the server asked"),  # above max_backoff_seconds, still honoured
        (10**9, RETRY_AFTER_CAP_SECONDS, " as the server asked"),  # capped at an hour
        (float("nan"), 1.0, ""),
        (float("inf"), 1.0, ""),
        (-5.0, 1.0, ""),
    ],
)
def test_retry_after(retry_after, delay, why):
    decision = decide_retry(NO_JITTER, 1, True, retry_after=retry_after, rand=mid)
    assert decision.retry and decision.delay_seconds == delay and decision.reason.endswith(why + "")


def test_attempts_start_at_one():
    with pytest.raises(ValueError):
        decide_retry(RetryPolicy(), 0, True)


def test_huge_exponents_do_not_overflow():
    policy = RetryPolicy(max_attempts=10**6, backoff_seconds=1, multiplier=100, max_backoff_seconds=60)
    assert backoff_delay(policy, 10**5) == 60
    assert decide_retry(policy, 10**5, True, rand=mid).delay_seconds == 60


def test_zero_backoff_retries_at_once():
    assert decide_retry(RetryPolicy(backoff_seconds=0), 1, True).delay_seconds == 0


@given(
    max_attempts=st.integers(1, 100),
    backoff=st.floats(0, 86_400),
    multiplier=st.floats(1, 100),
    max_backoff=st.floats(0, 86_400),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 200),
    retryable=st.booleans(),
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    r=st.floats(0, 1, exclude_max=True),
)
def test_decisions_are_always_sane(
    max_attempts, backoff, multiplier, max_backoff, jitter, attempt, retryable, retry_after, r
):
    policy = RetryPolicy(max_attempts, backoff, multiplier, max_backoff, jitter)
    d = decide_retry(policy, attempt, retryable, retry_after, rand=lambda: r)
    assert d.retry == (retryable and attempt < max_attempts)
    assert 0 <= d.delay_seconds <= max(max_backoff, RETRY_AFTER_CAP_SECONDS)
    if d.retry:
        assert d.delay_seconds <= max_backoff or (retry_after is not None and d.delay_seconds <= retry_after)
        if retry_after is not None and 0 <= retry_after <= RETRY_AFTER_CAP_SECONDS:
            assert d.delay_seconds >= retry_after
    else:
        assert d.delay_seconds == 0
