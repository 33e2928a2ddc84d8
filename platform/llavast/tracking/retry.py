"""Retry with exponential backoff, for MLflow calls that must not kill a training run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """`attempts` tries, sleeping base_s, 2*base_s, ... (capped at max_s) between them."""

    attempts: int = 5
    base_s: float = 0.5
    max_s: float = 10.0

    def delays(self) -> list[float]:
        return [min(self.base_s * 2**i, self.max_s) for i in range(self.attempts - 1)]


def retry(fn: Callable[[], T], backoff: Backoff, what: str,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn` until it succeeds or `backoff.attempts` are spent; re-raise the last error.

    Every exception counts as transient: the caller decides what a final failure means (raise at start,
    log and drop mid-run).
    """
    delays = backoff.delays()
    for attempt in range(backoff.attempts):
        try:
            return fn()
        except Exception as err:  # any failure of a remote call is retried
            if attempt == backoff.attempts - 1:
                raise
            log.warning("%s failed (attempt %d/%d): %s; retrying in %.1fs",
                        what, attempt + 1, backoff.attempts, err, delays[attempt])
            sleep(delays[attempt])
    raise AssertionError("unreachable")
