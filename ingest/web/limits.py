"""Abuse controls: token-bucket rate limits and caps on concurrent requests per worker and per client.

Client addresses are held only in memory, as bucket keys, and never logged or
stored; buckets that have refilled are dropped, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ingest.errors import RateLimited, Unavailable

MAX_BUCKETS = 100_000
# A locked-out address's 429 waits this long (well inside every request deadline, at
# least 0.5 s), for at most this many of its requests at once, and this many per worker.
TARPIT_SECONDS = 0.25
TARPIT_PER_CLIENT = 32  # as many as an address may hold open by default (max_concurrent_per_client)
TARPIT_TOTAL = 256


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
        bucket = self._refilled(key)
        if bucket.tokens < 1:
            raise RateLimited(math.ceil((1 - bucket.tokens) / self.rate))
        bucket.tokens -= 1

    def check(self, key: str) -> None:
        """Raise RateLimited if `key` has no token left, without spending one.

        A dict lookup and a little arithmetic: cheap enough to run before the body is
        read, and it creates no bucket, so keys that never fail cost no memory.
        """
        bucket = self.buckets.get(key)
        if bucket is None:
            return
        tokens = min(self.burst, bucket.tokens + (self.clock() - bucket.updated) * self.rate)  # type: ignore[operator]
        if tokens < 1:
            raise RateLimited(math.ceil((1 - tokens) / self.rate))

    def spend(self, key: str) -> None:
        """Spend one token for `key` if it has one (for counting failures; never raises)."""
        bucket = self._refilled(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def _refilled(self, key: str) -> _Bucket:
        now = self.clock()  # type: ignore[operator]
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._forget_full(now)
            bucket = self.buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

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


class ClientCap:
    """At most `limit` requests in progress per client address; the next gets 429 at once.

    Taken before the body is read, so one address trickling bodies holds at most
    `limit` of the worker's slots; an address leaves the table when its last request ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """Take one of `key`'s slots if one is free; say whether it was."""
        count = self.active.get(key, 0)
        if count >= self.limit:
            return False
        self.active[key] = count + 1
        return True

    def give_back(self, key: str) -> None:
        """Free a slot `take` gave; the address leaves the table with its last one."""
        left = self.active[key] - 1
        if left:
            self.active[key] = left
        else:
            del self.active[key]

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold one of `key`'s slots for the duration of the block (429 when none is free)."""
        if not self.take(key):
            raise RateLimited(1)
        try:
            yield
        finally:
            self.give_back(key)


class Tarpit:
    """Where an address locked out for failed authentication waits before its 429.

    At most `per_key` requests of one address and `total` of the worker wait; the rest
    are answered at once. The waiting holds no request slot (neither the worker's nor
    the address's, which its browser forms share), so it slows a closed-loop flood
    without costing anyone else a place.
    """

    def __init__(self, seconds: float, per_key: int, total: int) -> None:
        self.seconds = seconds
        self.places = ClientCap(per_key)  # per address
        self.total = total
        self.count = 0

    async def wait(self, key: str) -> None:
        """Wait `seconds`, or not at all when the address's or the worker's places are taken."""
        if self.count >= self.total or not self.places.take(key):
            return
        self.count += 1
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.count -= 1
            self.places.give_back(key)


ACCESS_PER_ADDRESS_PER_HOUR = 3
ACCESS_PER_CLIENT_PER_HOUR = 20
ACCESS_PER_CLIENT_BURST = 5


class Limiter:
    """The limits of one worker, built from the config."""

    def __init__(
        self,
        per_client_per_minute: int,
        per_source_per_second: int,
        max_concurrent: int,
        *,
        auth_failures_per_minute: int = 60,
        max_concurrent_per_client: int = 32,
    ) -> None:
        # Bursts: a person may send a few forms in a row; a source a second's worth at once.
        self.per_client = TokenBuckets(per_client_per_minute / 60, burst=max(5, per_client_per_minute / 6))
        self.per_source = TokenBuckets(per_source_per_second, burst=per_source_per_second)
        self.concurrency = ConcurrencyCap(max_concurrent)
        self.per_client_concurrency = ClientCap(max_concurrent_per_client)
        # Failed authentication, per client address: a minute's worth at once (a sender
        # with a mistyped secret sees its 401s), then 429 before the body is even read.
        # Intake and the admin API count apart, so neither locks the other out.
        self.auth_failures = TokenBuckets(auth_failures_per_minute / 60, burst=auth_failures_per_minute)
        self.admin_failures = TokenBuckets(auth_failures_per_minute / 60, burst=auth_failures_per_minute)
        # An address past that budget waits for its 429s (intake, signed sources).
        self.tarpit = Tarpit(TARPIT_SECONDS, TARPIT_PER_CLIENT, TARPIT_TOTAL)
        # The self-service access page mails a link: a few an hour per address (whether or
        # not it is known, so the limit tells nothing) and per client address.
        self.access_per_address = TokenBuckets(
            ACCESS_PER_ADDRESS_PER_HOUR / 3600, burst=ACCESS_PER_ADDRESS_PER_HOUR
        )
        self.access_per_client = TokenBuckets(
            ACCESS_PER_CLIENT_PER_HOUR / 3600, burst=ACCESS_PER_CLIENT_BURST
        )
