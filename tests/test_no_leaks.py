"""Personal data never reaches logs, error bodies or metrics: accepted and rejected alike."""

from __future__ import annotations

import json

from aiohttp import web

from ingest.web.app import create_app
from tests.support import ORIGIN, PEPPER, sign_standard

CANARY = {
    "name": "Canary Koskinen",
    "email": "canary.koskinen@example.fi",
    "phone": "+358 40 765 4321",
    "message": "Canary message about my private matter",
}
CANARY_VALUES = [*CANARY.values(), "canary.koskinen", "407654321", "203.0.113.200"]


def _assert_clean(text: str) -> None:
    for value in CANARY_VALUES:
        assert value.lower() not in text.lower(), f"{value!r} leaked"


async def _post_everything(client) -> list[str]:
    bodies = []
    headers = {"Origin": ORIGIN, "Accept": "application/json", "X-Forwarded-For": "203.0.113.200"}
    cases = [
        CANARY,  # accepted
        CANARY | {"email": "canary.koskinen@"},  # invalid e-mail
        CANARY | {"phone": "+358 40 765 4321 999999"},  # invalid phone
        CANARY | {"name": "Canary Koskinen" * 20},  # too long
        {"name": CANARY["name"], "message": CANARY["message"]},  # no contact
    ]
    for form in cases:
        response = await client.post("/v1/forms/website-contact", data=form, headers=headers)
        bodies.append(await response.text())
    body = json.dumps(CANARY).encode()
    signed = sign_standard(body)
    for hdrs in (signed, signed | {"webhook-signature": "v1,AAAA"}):
        response = await client.post("/v1/forms/partner-forms", data=body, headers=hdrs)
        bodies.append(await response.text())
    response = await client.post(
        "/v1/forms/partner-forms",
        data=b'{"email": "canary.koskinen@example.fi",',
        headers=sign_standard(b'{"email": "canary.koskinen@example.fi",'),
    )
    bodies.append(await response.text())
    response = await client.post(
        "/v1/forms/website-contact", data=CANARY, headers={"Origin": "https://evil.example"}
    )
    bodies.append(await response.text())
    return bodies


async def test_no_personal_data_in_logs_error_bodies_or_metrics(client, log_output):
    bodies = await _post_everything(client)
    assert any('"created"' in b for b in bodies)  # the accepted path ran too
    for body in bodies:
        _assert_clean(body)
    logged = log_output.getvalue()
    assert logged.count('"event": "request"') == len(bodies)
    _assert_clean(logged)
    metrics = await (await client.get("/metrics")).text()
    assert "ingest_submissions_total" in metrics
    _assert_clean(metrics)


async def test_every_request_line_has_id_source_outcome_and_latency(client, log_output):
    await client.post(
        "/v1/forms/website-contact", data=CANARY, headers={"Origin": ORIGIN, "Accept": "application/json"}
    )
    line = json.loads(log_output.getvalue().strip().splitlines()[-1])
    assert line["event"] == "request"
    assert line["source"] == "website-contact"
    assert line["channel"] == "form"
    assert line["outcome"] == "created"
    assert line["status"] == 201
    assert isinstance(line["latency_ms"], float)
    assert len(line["request_id"]) == 32


async def test_an_unexpected_error_is_a_500_that_reveals_nothing(aiohttp_client, db_dsn, config, log_output):
    async def explode(_: web.Request) -> web.Response:
        raise RuntimeError(f"database said: Key (email)=({CANARY['email']}) already exists")

    app = create_app(config, db_dsn, PEPPER)
    app.router.add_get("/explode", explode)
    client = await aiohttp_client(app)
    response = await client.get("/explode")
    assert response.status == 500
    assert await response.json() == {"error": "internal"}
    logged = log_output.getvalue()
    assert "RuntimeError" in logged
    _assert_clean(logged)
    _assert_clean(await response.text())
