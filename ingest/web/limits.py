"""Abuse controls: token-bucket rate limits and a cap on concurrent requests per worker.

Client addresses are held only in memory, as bucket keys, and never logged or
stored; buckets that have refilled are dropped, so memory stays bounded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ingest.errors import RateLimited, Unavailable

MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key: `rate` tokens per second, up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: object = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> None:
        """Spend one token for `key`, or raise RateLimited with the seconds until the next."""
        now = self.clock()  # type: ignore[operator]
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self.buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens < 1:
            raise RateLimited(math.ceil((1 - bucket.tokens) / self.rate))
        bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        full = [k for k, b in self.buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full:
            del self.buckets[key]
        if len(self.buckets) >= MAX_BUCKETS:  # a flood of distinct keys: start afresh
            self.buckets.clear()


class ConcurrencyCap:
    """At most `limit` requests in progress; the next gets 503 at once (no unbounded queue)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def __enter__(self) -> None:
        if self.active >= self.limit:
            raise Unavailable(retry_after=1)
        self.active += 1

    def __exit__(self, *_: object) -> None:
        self.active -= 1


class Limiter:
    """The limits of one worker, built from the config."""

    def __init__(self, per_client_per_minute: int, per_source_per_second: int, max_concurrent: int) -> None:
        # Bursts: a person may send a few forms in a row; a source a second's worth at once.
        self.per_client = TokenBuckets(per_client_per_minute / 60, burst=max(5, per_client_per_minute / 6))
        self.per_source = TokenBuckets(per_source_per_second, burst=per_source_per_second)
        self.concurrency = ConcurrencyCap(max_concurrent)
