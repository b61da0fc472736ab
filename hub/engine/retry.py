"""Retry decisions and attempt keys: the one place retries are decided (never the queue's own retries)."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .flow import RetryPolicy

__all__ = ["RETRY_AFTER_CAP_SECONDS", "RetryDecision", "decide_retry", "idempotency_key"]

#: A server's Retry-After is honoured up to this long; beyond it a misbehaving server could park a run.
RETRY_AFTER_CAP_SECONDS = 3600.0


def idempotency_key(run_id: Any, node_id: str, attempt: int) -> str:
    """sha256("{run_id}:{node_id}:{attempt}"): unique per attempt, claimed in the database before it runs."""
    return hashlib.sha256(f"{run_id}:{node_id}:{attempt}".encode()).hexdigest()


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_seconds: float
    reason: str


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """The un-jittered delay after ``attempt``: exponential, capped at ``max_backoff_seconds``."""
    try:
        raw = policy.backoff_seconds * policy.multiplier ** (attempt - 1)
    except OverflowError:
        raw = math.inf
    return max(0.0, min(policy.max_backoff_seconds, raw))


def decide_retry(
    policy: RetryPolicy,
    attempt: int,
    retryable: bool,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> RetryDecision:
    """Whether to run another attempt after ``attempt`` (1-based, just finished) failed, and when.

    The delay is the capped exponential backoff scaled by a random factor in [1 - jitter, 1 + jitter]
    (spreading retries of many runs apart), kept within [0, max_backoff_seconds]; a server's
    ``retry_after`` raises it (honoured up to one hour, even beyond max_backoff_seconds).
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    if not retryable:
        return RetryDecision(False, 0.0, "the error is not retryable")
    if attempt >= policy.max_attempts:
        return RetryDecision(False, 0.0, f"gave up after {attempt} of {policy.max_attempts} attempts")
    base = backoff_delay(policy, attempt)
    jitter = min(max(policy.jitter, 0.0), 1.0)
    delay = base * (1.0 + jitter * (2.0 * rand() - 1.0))
    delay = max(0.0, min(policy.max_backoff_seconds, delay))
    why = ""
    if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
        delay = min(float(retry_after), RETRY_AFTER_CAP_SECONDS)
        why = " as the server asked"
    return RetryDecision(
        True, delay, f"attempt {attempt} of {policy.max_attempts} failed; retrying in {delay:.2f}s{why}"
    )
