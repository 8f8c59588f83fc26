"""The one back-off rule: exponential with a cap, full jitter on request, a server's floor."""

from __future__ import annotations

import math
import random

import pytest
from longread_server.backoff import Backoff
from longread_server.calls.retry import RetryPolicy
from longread_server.domain import ErrorKind, UpstreamError


def test_exponential_up_to_the_cap_without_jitter() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.ceiling(0) == 0.5  # attempt numbers start at 1; below that is the first wait


def test_a_fixed_interval_is_a_cap_equal_to_the_base() -> None:
    b = Backoff(1.0, 1.0)
    assert {b.delay(n) for n in range(1, 50)} == {1.0}


def test_uncapped_doubling_as_an_exporter_retries() -> None:
    b = Backoff(0.5)
    assert [b.delay(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]


def test_another_factor_grows_as_repeated_multiplication_would() -> None:
    b = Backoff(0.02, 0.2, factor=1.5)
    step, expected = 0.02, []
    for _ in range(10):
        expected.append(step)
        step = min(step * 1.5, 0.2)
    assert [b.delay(n) for n in range(1, 11)] == pytest.approx(expected)


def test_a_long_poll_never_overflows() -> None:
    assert Backoff(0.02, 0.2, factor=1.5).delay(100_000) == 0.2
    assert Backoff(0.5).delay(100_000) == math.inf


def test_full_jitter_is_deterministic_with_an_rng_and_stays_under_the_ceiling() -> None:
    b = Backoff(0.5, 20.0, jitter=True)
    a, c = random.Random(3), random.Random(3)
    draws = [b.delay(n, a) for n in range(1, 8)]
    assert draws == [c.uniform(0.0, min(20.0, 0.5 * 2 ** (n - 1))) for n in range(1, 8)]
    assert all(0 <= d <= b.ceiling(n) for n, d in enumerate(draws, 1))


def test_a_server_given_delay_is_a_floor() -> None:
    b = Backoff(0.5, 20.0, jitter=True)
    rng = random.Random(1)
    assert b.delay(1, rng, at_least=7.0) == 7.0
    assert Backoff(4.0).delay(1, at_least=1.0) == 4.0  # longer than asked: ours
    assert Backoff(4.0).delay(1, at_least=None) == 4.0


def test_retry_waits_are_what_they_were() -> None:
    """The retry stage's delays for a seed: ``max(retry-after, uniform(0, min(cap, base *
    2**(n-1))))``, draw for draw."""
    policy = RetryPolicy(max_attempts=5, base_s=0.5, cap_s=3.0)
    ours, theirs = random.Random(11), random.Random(11)
    for retry in range(1, 6):
        for after in (None, 0.0, 1.25):
            err = UpstreamError(ErrorKind.RATE_LIMITED, "slow down", retry_after_s=after)
            old = max(after or 0.0, theirs.uniform(0.0, min(3.0, 0.5 * 2 ** (retry - 1))))
            assert policy.delay(retry, err, ours) == old
