"""A flood of refused requests is logged in part: a few lines a second of each kind, then a count.

Every refusal is still counted in /metrics; the log keeps a sample and, once the second
is over, says how many lines of each kind it left out, so an attacker cannot grow the
logs (or spend our CPU on them) as fast as they can send. Accepted submissions are
never left out.
"""

from __future__ import annotations

import asyncio
import json
import time

from ingest.logs import RepeatLimiter
from ingest.web.app import REFUSAL_LINES_PER_SECOND
from tests.support import sign_standard

URL = "/v1/forms/partner-forms"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The time now."""
        return self.now


def test_a_kind_gets_its_lines_a_second_and_the_rest_are_counted_once_it_is_over() -> None:
    clock = Clock()
    limiter = RepeatLimiter(3, clock)
    assert [limiter.allow("401") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("404") is True  # another kind has its own budget
    assert limiter.ended() == {}  # the second is not over yet
    clock.now += 1.0
    assert limiter.ended() == {"401": 2}  # told once the second is over
    assert limiter.ended() == {}  # and only once
    assert limiter.allow("401") is True  # a new second, a new budget


def request_lines(output: str) -> list[dict[str, object]]:
    return [line for line in map(json.loads, output.splitlines()) if line.get("event") == "request"]


async def test_a_flood_of_bad_signatures_writes_a_sample_then_a_count_and_metrics_count_every_one(
    client, log_output
):
    body = b'{"email": "flood@example.fi"}'
    headers = sign_standard(body, "whsec_" + "d3Jvbmctc2VjcmV0LWZvci10aGUtZmxvb2QtdGVzdA==")
    flood = 50  # more than two seconds of lines, fewer than the failures that earn a 429 (60)
    started = time.monotonic()
    for _ in range(flood):
        assert (await client.post(URL, data=body, headers=headers)).status == 401
    seconds = int(time.monotonic()) - int(started) + 1  # the seconds the flood touched
    await asyncio.sleep(1.0)  # that second is over: the next request reports what was left out
    assert (await client.get("/healthz")).status == 200
    output = log_output.getvalue()
    lines = [line for line in request_lines(output) if line["status"] == 401]
    assert REFUSAL_LINES_PER_SECOND <= len(lines) <= seconds * REFUSAL_LINES_PER_SECOND
    assert len(lines) < flood
    counts = [line for line in map(json.loads, output.splitlines()) if line["event"] == "requests_not_logged"]
    assert {(c["status"], c["error"], c["source"]) for c in counts} == {
        (401, "invalid_signature", "partner-forms")
    }
    assert len(lines) + sum(int(c["count"]) for c in counts) == flood  # every one, logged or counted
    metrics = await (await client.get("/metrics")).text()
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("ingest_signature_failures_total") and 'source="partner-forms"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == flood


async def test_accepted_submissions_are_each_logged(client, log_output):
    count = 2 * REFUSAL_LINES_PER_SECOND
    for i in range(count):
        body = json.dumps({"email": f"person{i}@example.fi"}).encode()
        assert (await client.post(URL, data=body, headers=sign_standard(body))).status == 201
    created = [line for line in request_lines(log_output.getvalue()) if line.get("outcome") == "created"]
    assert len(created) == count
