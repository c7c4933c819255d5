"""A circuit breaker for the LLM endpoint: after a run of consecutive failures, stop
calling it for a cool-down, then let a single request try again.

Without it a dead endpoint costs every post its full retry budget (about 1.3 s each
against a refused port); with it the posts of an outage fail at once and are asked
again on the next retrieval.
"""

from __future__ import annotations

import threading
import time


class CircuitBreaker:
    def __init__(self, *, errors: int, cooldown: float) -> None:
        self.errors = errors
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False  # a request is testing the endpoint after the cool-down
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether a request may go out now."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial or time.monotonic() - self._opened_at < self.cooldown:
                return False
            self._trial = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._trial = 0, None, False

    def failed(self) -> bool:
        """Count a failure; True when this one opened (or re-opened) the breaker."""
        with self._lock:
            self._failures += 1
            reopened = self._trial
            self._trial = False
            if reopened or (self._opened_at is None and self._failures >= self.errors):
                self._opened_at = time.monotonic()
                return True
            return False
