"""A flood of refused requests is logged in part: a few lines a second of each kind, then a count.

Every refusal is still counted in /metrics; the log keeps a sample and says how many
it left out, so an attacker cannot grow the logs (or spend our CPU on them) as fast
as they can send. Accepted submissions are never left out.
"""

from __future__ import annotations

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


def test_a_kind_gets_its_lines_a_second_and_the_next_line_counts_those_left_out() -> None:
    clock = Clock()
    limiter = RepeatLimiter(3, clock)
    assert [limiter.allow("401") for _ in range(5)] == [0, 0, 0, None, None]
    assert limiter.allow("404") == 0  # another kind has its own budget
    clock.now += 1.0
    assert limiter.allow("401") == 2  # the first line of the next second says 2 were left out
    assert limiter.allow("401") == 0  # and the count starts again


def request_lines(output: str) -> list[dict[str, object]]:
    return [line for line in map(json.loads, output.splitlines()) if line.get("event") == "request"]


async def test_a_flood_of_bad_signatures_writes_a_sample_and_metrics_count_every_one(client, log_output):
    body = b'{"email": "flood@example.fi"}'
    headers = sign_standard(body, "whsec_" + "d3Jvbmctc2VjcmV0LWZvci10aGUtZmxvb2QtdGVzdA==")
    flood = 50  # more than two seconds of lines, fewer than the failures that earn a 429 (60)
    started = time.monotonic()
    for _ in range(flood):
        assert (await client.post(URL, data=body, headers=headers)).status == 401
    seconds = int(time.monotonic()) - int(started) + 1  # the windows the flood touched
    lines = [line for line in request_lines(log_output.getvalue()) if line["status"] == 401]
    assert REFUSAL_LINES_PER_SECOND <= len(lines) <= seconds * REFUSAL_LINES_PER_SECOND
    assert len(lines) < flood
    assert sum(int(line.get("suppressed", 0)) for line in lines) + len(lines) <= flood  # type: ignore[call-overload]
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
