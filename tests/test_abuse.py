"""Abuse controls: rate limits, concurrency cap, slow bodies, honeypot timing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import pytest

from ingest.adapters.html import make_stamp, stamp_key
from ingest.errors import RateLimited
from ingest.web.limits import TokenBuckets
from tests.support import ADMIN_TOKEN, ORIGIN, PEPPER, base_config_dict, make_config, sign_standard

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
    key = stamp_key(PEPPER)
    fast = await client.post(
        URL,
        data={"email": "bot@example.fi", "_rendered_at": make_stamp(key, "website-contact")},
        headers=HEADERS,
    )
    assert fast.status == 201
    human = await client.post(
        URL,
        data={
            "email": "human@example.fi",
            "_rendered_at": make_stamp(key, "website-contact", time.time() - 20),
        },
        headers=HEADERS,
    )
    assert human.status == 201
    assert [r["email"] for r in await db.fetch("SELECT email FROM crm.contacts")] == ["human@example.fi"]


# Issue 13, item 6: unauthenticated traffic must not spend the real sender's budget.

PARTNER_URL = "/v1/forms/partner-forms"
LEGITIMATE = "198.51.100.7"
FLOODER = "203.0.113.66"


def _delivery(address: str, *, valid: bool) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"email": f"p{uuid.uuid4().hex[:12]}@example.fi"}).encode()
    headers = sign_standard(body) | {"X-Forwarded-For": address}
    if not valid:
        headers["webhook-signature"] = "v1," + base64.b64encode(b"\0" * 32).decode()
    return body, headers


async def test_a_flood_of_wrongly_signed_requests_does_not_429_the_real_sender(make_client, db):
    # A source budget of 50 a second (a burst of 50); only the proxy hop is trusted, to tell
    # the two addresses apart. The flood used to spend partner-forms' tokens before its
    # signature was checked, and most of the partner's own deliveries got 429.
    client = await make_client(config_with(trusted_proxy_hops=1, rate_per_source_per_second=50))
    flooding = True
    flood_statuses: list[int] = []

    async def flood() -> None:
        while flooding:
            body, headers = _delivery(FLOODER, valid=False)
            flood_statuses.append((await client.post(PARTNER_URL, data=body, headers=headers)).status)

    flooders = [asyncio.ensure_future(flood()) for _ in range(30)]
    try:
        await asyncio.sleep(0.3)  # the flood is in full swing before the partner delivers
        legitimate = []
        for _ in range(40):
            body, headers = _delivery(LEGITIMATE, valid=True)
            legitimate.append((await client.post(PARTNER_URL, data=body, headers=headers)).status)
    finally:
        flooding = False
        await asyncio.gather(*flooders)
    assert len(flood_statuses) > 50  # more than the source's whole burst (slowed once locked out)
    assert set(flood_statuses) <= {401, 429}
    assert legitimate == [201] * 40
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 40


async def test_after_the_failed_authentication_limit_an_address_gets_429_unverified(make_client, monkeypatch):
    from ingest.adapters import json as json_adapter

    verified = []
    real_verify = json_adapter.verify_standard_webhook

    def counting_verify(source, request):
        verified.append(1)
        return real_verify(source, request)

    monkeypatch.setattr(json_adapter, "verify_standard_webhook", counting_verify)
    client = await make_client(config_with(trusted_proxy_hops=1))  # the default: 60 a minute
    statuses = []
    for _ in range(63):
        body, headers = _delivery(FLOODER, valid=False)
        statuses.append((await client.post(PARTNER_URL, data=body, headers=headers)).status)
    assert statuses == [401] * 60 + [429] * 3
    assert len(verified) == 60  # the 429s were answered without computing an HMAC
    body, headers = _delivery(FLOODER, valid=False)
    refused = await client.post(PARTNER_URL, data=body, headers=headers)
    assert await refused.json() == {"error": "rate_limited"}
    assert int(refused.headers["Retry-After"]) >= 1
    # Other addresses, and the source's own budget, are untouched.
    body, headers = _delivery(LEGITIMATE, valid=True)
    assert (await client.post(PARTNER_URL, data=body, headers=headers)).status == 201


async def test_a_locked_out_address_is_refused_before_its_body_is_read(make_client):
    client = await make_client(config_with(trusted_proxy_hops=1, auth_failures_per_client_per_minute=2))
    for _ in range(2):
        body, headers = _delivery(FLOODER, valid=False)
        assert (await client.post(PARTNER_URL, data=body, headers=headers)).status == 401
    # Headers only, announcing a body that never comes: the answer does not wait for it.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"POST {PARTNER_URL} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {FLOODER}\r\n"
        "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), timeout=2)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 429")
    assert b"Retry-After:" in answer


async def test_a_locked_out_address_waits_for_its_429s_and_others_do_not(make_client):
    from ingest.web.limits import TARPIT_PER_CLIENT, TARPIT_SECONDS

    client = await make_client(config_with(trusted_proxy_hops=1, auth_failures_per_client_per_minute=2))
    for _ in range(2):
        body, headers = _delivery(FLOODER, valid=False)
        assert (await client.post(PARTNER_URL, data=body, headers=headers)).status == 401

    async def timed(address: str, *, valid: bool) -> tuple[int, float]:
        body, headers = _delivery(address, valid=valid)
        started = time.monotonic()
        response = await client.post(PARTNER_URL, data=body, headers=headers)
        return response.status, time.monotonic() - started

    # A flood from the locked-out address is held (each answer waits), while a
    # legitimate sender's delivery in the middle of it is answered at once.
    flood = [asyncio.ensure_future(timed(FLOODER, valid=False)) for _ in range(TARPIT_PER_CLIENT)]
    await asyncio.sleep(0.05)
    status, legit_took = await timed(LEGITIMATE, valid=True)
    refused = await asyncio.gather(*flood)
    assert status == 201
    assert legit_took < TARPIT_SECONDS
    assert [s for s, _ in refused] == [429] * TARPIT_PER_CLIENT
    assert min(took for _, took in refused) >= TARPIT_SECONDS


async def test_a_locked_out_address_waiting_for_its_429s_holds_none_of_its_browser_forms_slots(make_client):
    from ingest.web.limits import TARPIT_PER_CLIENT, TARPIT_SECONDS

    # Each address may hold 4 requests open; the locked-out one floods with more than that.
    client = await make_client(
        config_with(trusted_proxy_hops=1, auth_failures_per_client_per_minute=2, max_concurrent_per_client=4)
    )
    for _ in range(2):
        body, headers = _delivery(FLOODER, valid=False)
        assert (await client.post(PARTNER_URL, data=body, headers=headers)).status == 401

    async def refused() -> tuple[int, float]:
        body, headers = _delivery(FLOODER, valid=False)
        started = time.monotonic()
        response = await client.post(PARTNER_URL, data=body, headers=headers)
        return response.status, time.monotonic() - started

    flood = [asyncio.ensure_future(refused()) for _ in range(2 * TARPIT_PER_CLIENT)]
    await asyncio.sleep(0.05)  # the flood is waiting in the tarpit
    # The same address's browser form still gets a slot (and its own answer).
    form = await client.post(
        URL,
        data={"email": "person@example.fi"},
        headers={"Origin": ORIGIN, "Accept": "application/json", "X-Forwarded-For": FLOODER},
    )
    answers = await asyncio.gather(*flood)
    assert form.status == 201
    assert {status for status, _ in answers} == {429}
    waited = [took for _, took in answers if took >= TARPIT_SECONDS]
    assert len(waited) == TARPIT_PER_CLIENT  # the tarpit's places for one address; the rest at once


async def _trickle(port: int, address: str, held: float) -> bytes:
    """A form post from `address` whose body trickles in over `held` seconds."""
    body = b"email=slow%40example.fi"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {URL} HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nAccept: application/json\r\n"
            f"X-Forwarded-For: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[:3]
    )
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(65536), timeout=held)
    except TimeoutError:  # still being held open by the server: finish the body
        writer.write(body[3:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    writer.close()
    return answer


async def test_slow_bodies_from_one_address_do_not_lock_out_another(make_client):
    # The whole worker may hold 6 requests; one address at most 2 of them.
    client = await make_client(
        config_with(
            trusted_proxy_hops=1,
            max_concurrent_requests=6,
            max_concurrent_per_client=2,
            body_timeout_seconds=5,
        )
    )
    slow = [asyncio.ensure_future(_trickle(client.port, FLOODER, held=1.5)) for _ in range(12)]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    response = await client.post(
        URL, data={"email": "other@example.fi"}, headers=HEADERS | {"X-Forwarded-For": LEGITIMATE}
    )
    assert response.status == 201
    assert time.monotonic() - started < 1
    answers = await asyncio.gather(*slow)
    statuses = sorted(int(a.split(b" ", 2)[1]) for a in answers)
    assert statuses == [201] * 2 + [429] * 10  # the address's own excess is refused at once
    refused = next(a for a in answers if a.startswith(b"HTTP/1.1 429"))
    assert b"Retry-After: 1\r\n" in refused


async def test_under_the_default_per_address_cap_slow_bodies_cannot_fill_the_worker(make_client):
    # 45 trickling bodies from one address against a worker cap of 40: the default
    # per-address cap (32) leaves room for everyone else (the whole worker was 503). The
    # per-client rate is lifted so that only the caps are at work.
    client = await make_client(
        config_with(trusted_proxy_hops=1, max_concurrent_requests=40, rate_per_client_per_minute=100_000)
    )
    slow = [asyncio.ensure_future(_trickle(client.port, FLOODER, held=1.5)) for _ in range(45)]
    await asyncio.sleep(0.5)
    response = await client.post(
        URL, data={"email": "other@example.fi"}, headers=HEADERS | {"X-Forwarded-For": LEGITIMATE}
    )
    assert response.status == 201
    statuses = [int(a.split(b" ", 2)[1]) for a in await asyncio.gather(*slow)]
    assert sorted(statuses) == [201] * 32 + [429] * (45 - 32)


# Issue 13, item 7: the admin API limits failed bearer-token attempts per address.


async def test_failed_admin_tokens_are_limited_per_address(make_client, monkeypatch):
    from ingest.web import admin

    client = await make_client(config_with(trusted_proxy_hops=1))  # the default: 60 a minute
    guesser = {"Authorization": "Bearer not-the-token", "X-Forwarded-For": FLOODER}
    statuses = [
        (await client.get("/v1/subjects", params={"email": "a@example.fi"}, headers=guesser)).status
        for _ in range(62)
    ]
    assert statuses == [401] * 60 + [429] * 2
    compared = []
    real = admin.hmac.compare_digest
    monkeypatch.setattr(admin.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    refused = await client.get("/v1/subjects", params={"email": "a@example.fi"}, headers=guesser)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert compared == []  # refused before any token was compared
    # A valid token from another address keeps every right it had.
    officer = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Forwarded-For": LEGITIMATE}
    response = await client.get("/v1/subjects", params={"email": "a@example.fi"}, headers=officer)
    assert response.status == 200
