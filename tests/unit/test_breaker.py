"""Unit tests for backend.llm.breaker: stop calling a dead LLM endpoint, then try again."""

from __future__ import annotations

import time

from backend.llm.breaker import CircuitBreaker


def test_opens_after_consecutive_failures_only():
    breaker = CircuitBreaker(errors=3, cooldown=60)
    assert [breaker.failed() for _ in range(2)] == [False, False]
    breaker.succeeded()  # a success resets the run of failures
    assert [breaker.failed() for _ in range(2)] == [False, False]
    assert breaker.allow() and not breaker.is_open
    assert breaker.failed() is True  # the third in a row opens it
    assert breaker.is_open and not breaker.allow()


def test_one_trial_after_the_cooldown_then_closed_or_reopened():
    breaker = CircuitBreaker(errors=1, cooldown=0.05)
    breaker.failed()
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()  # the trial request
    assert not breaker.allow()  # only one at a time while it is out
    assert breaker.failed() is True  # the trial failed: open for another cool-down
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow()
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow() and breaker.allow()
