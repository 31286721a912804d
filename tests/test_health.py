"""Liveness, readiness, metrics, and 503 when the database is away."""

from __future__ import annotations

import json
import socket

from ingest.web.app import create_app
from tests.support import ORIGIN, PEPPER, sign_standard


async def test_healthz_and_readyz_answer_when_all_is_well(client):
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def test_readyz_reports_an_unmigrated_database(aiohttp_client, empty_db, config, log_output, db_dsn):
    import asyncpg

    # Consent texts need the schema to start; create just that table in the empty database.
    conn = await asyncpg.connect(empty_db)
    await conn.execute(
        "CREATE SCHEMA ingest; CREATE TABLE ingest.consent_texts (consent_id text PRIMARY KEY, purpose text, "
        "text text, text_sha256 text, first_seen_at timestamptz DEFAULT now())"
    )
    await conn.close()
    client = await aiohttp_client(create_app(config, empty_db, PEPPER))
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["reason"] == "not_migrated"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_requests_get_503_with_retry_after_when_the_database_is_unreachable(
    aiohttp_client, client, config, log_output, monkeypatch
):
    # The client fixture's app started normally; now point a second app's pool at nothing.
    from ingest.web import app as app_module

    async def no_sync(*_args):
        return None

    monkeypatch.setattr(app_module, "sync_consent_texts", no_sync)
    dead = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    broken = await aiohttp_client(create_app(config, dead, PEPPER))
    body = json.dumps({"email": "maija@example.fi"}).encode()
    response = await broken.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
    assert response.status == 503
    assert await response.json() == {"error": "unavailable"}
    assert int(response.headers["Retry-After"]) > 0
    ready = await broken.get("/readyz")
    assert ready.status == 503
    form = await broken.post(
        "/v1/forms/website-contact",
        data={"email": "maija@example.fi"},
        headers={"Origin": ORIGIN, "Accept": "application/json"},
    )
    assert form.status == 503


async def test_metrics_count_submissions_by_source_and_outcome(client):
    await client.post(
        "/v1/forms/website-contact",
        data={"email": "m@example.fi"},
        headers={"Origin": ORIGIN, "Accept": "application/json"},
    )
    await client.post(
        "/v1/forms/website-contact",
        data={"email": "bad"},
        headers={"Origin": ORIGIN, "Accept": "application/json"},
    )
    text = await (await client.get("/metrics")).text()
    assert 'ingest_submissions_total{channel="form",outcome="created",source="website-contact"} 1.0' in text
    assert (
        'ingest_submissions_total{channel="form",outcome="rejected_validation_failed",'
        'source="website-contact"} 1.0'
    ) in text


async def test_unknown_routes_get_a_json_404(client):
    response = await client.get("/nope")
    assert response.status == 404
    assert await response.json() == {"error": "not_found"}


async def test_a_wrong_method_gets_a_json_405(client):
    response = await client.get("/v1/forms/partner-forms")  # GET serves only html sources' forms
    assert response.status == 405
    assert await response.json() == {"error": "method_not_allowed"}


async def test_readyz_is_503_while_writes_cannot_commit_and_200_once_they_can(client, db):
    import asyncio
    import time

    async with db.transaction():
        # Another session (the owner) holds the feed lock every write takes.
        await db.execute("SELECT id FROM ingest.feed_lock FOR UPDATE")
        body = json.dumps({"email": "maija@example.fi"}).encode()
        response = await client.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
        assert response.status == 503
        started = time.monotonic()
        ready = await client.get("/readyz")
        seconds = time.monotonic() - started
        assert ready.status == 503
        assert await ready.json() == {"error": "unavailable", "reason": "writes_failing"}
        assert int(ready.headers["Retry-After"]) > 0
        assert seconds < 1 + 1.5  # its check is bounded: waiting on the lock too, it answers in 1 s
    await asyncio.sleep(0)
    # No submission since: /readyz's own probe of the write path brings it back.
    assert (await client.get("/readyz")).status == 200
    response = await client.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
    assert response.status == 201
