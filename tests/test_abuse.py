"""Abuse controls: rate limits, concurrency cap, slow bodies, honeypot timing."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingest.errors import RateLimited
from ingest.web.limits import TokenBuckets
from tests.support import ORIGIN, base_config_dict, make_config

URL = "/v1/forms/website-contact"
HEADERS = {"Origin": ORIGIN, "Accept": "application/json"}


def config_with(**limits):
    raw = base_config_dict()
    raw["limits"] = limits
    return make_config(raw)


async def test_a_client_over_its_rate_gets_429_with_retry_after(make_client, db):
    client = await make_client(config_with(rate_per_client_per_minute=6))  # burst of 5
    statuses = [
        (await client.post(URL, data={"email": f"p{i}@example.fi"}, headers=HEADERS)).status for i in range(6)
    ]
    assert statuses == [201] * 5 + [429]
    response = await client.post(URL, data={"email": "late@example.fi"}, headers=HEADERS)
    assert response.status == 429
    assert await response.json() == {"error": "rate_limited"}
    assert int(response.headers["Retry-After"]) >= 1
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 5


async def test_clients_behind_a_trusted_proxy_are_limited_separately(make_client):
    client = await make_client(config_with(rate_per_client_per_minute=6, trusted_proxy_hops=1))
    for i in range(12):
        headers = HEADERS | {"X-Forwarded-For": f"198.51.100.{i}"}
        assert (await client.post(URL, data={"email": f"p{i}@example.fi"}, headers=headers)).status == 201


async def test_a_source_over_its_rate_gets_429(make_client):
    client = await make_client(config_with(rate_per_source_per_second=3))
    statuses = [
        (await client.post(URL, data={"email": f"s{i}@example.fi"}, headers=HEADERS)).status for i in range(4)
    ]
    assert statuses == [201, 201, 201, 429]


def test_token_buckets_refill_over_time_and_forget_idle_clients():
    now = [0.0]
    buckets = TokenBuckets(rate=1, burst=2, clock=lambda: now[0])
    buckets.take("a")
    buckets.take("a")
    with pytest.raises(RateLimited):
        buckets.take("a")
    now[0] = 1.0
    buckets.take("a")  # one token back after a second


async def _slow_request(port: int, body: bytes, pause: float) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {URL} HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nAccept: application/json\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[:5])
    await writer.drain()
    await asyncio.sleep(pause)
    try:
        writer.write(body[5:])
        await writer.drain()
    except ConnectionError:
        pass
    answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    writer.close()
    return answer


async def test_a_body_that_arrives_too_slowly_gets_408(make_client, db):
    client = await make_client(config_with(body_timeout_seconds=0.5))
    started = time.monotonic()
    answer = await _slow_request(client.port, b"email=slow%40example.fi", pause=2)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"body_timeout"' in answer
    assert time.monotonic() - started < 5
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 0


async def test_past_the_concurrency_cap_a_request_gets_503_at_once(make_client):
    client = await make_client(config_with(max_concurrent_requests=1, body_timeout_seconds=3))
    slow = asyncio.ensure_future(_slow_request(client.port, b"email=first%40example.fi", pause=1))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    response = await client.post(URL, data={"email": "second@example.fi"}, headers=HEADERS)
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 0.5  # refused, not queued
    assert (await slow).startswith(b"HTTP/1.1 201")


async def test_a_form_filled_faster_than_a_person_can_looks_like_success_but_is_not_stored(make_client, db):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["min_fill_seconds"] = 3
    client = await make_client(make_config(raw))
    fast = await client.post(
        URL, data={"email": "bot@example.fi", "_rendered_at": str(time.time())}, headers=HEADERS
    )
    assert fast.status == 201
    human = await client.post(
        URL, data={"email": "human@example.fi", "_rendered_at": str(time.time() - 20)}, headers=HEADERS
    )
    assert human.status == 201
    assert [r["email"] for r in await db.fetch("SELECT email FROM crm.contacts")] == ["human@example.fi"]
