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


async def _raw_exchange(port: int, request: bytes) -> bytes:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def test_a_request_the_http_parser_refuses_leaves_no_secret_or_value_in_the_logs(client, log_output):
    # aiohttp's own "Error handling request" record carries a traceback quoting the raw
    # request: the request line (query secrets, e-mails), the headers (tokens), the body.
    port = client.server.port
    answers = [
        await _raw_exchange(
            port,
            b"GET /v1/subjects?email=canary.koskinen@example.fi&key=QUERY-SECRET-9 HTTP/1.1\r\n"
            b"Host: x\r\nAuthorization: Bearer SECRET-TOKEN-123\x01\r\n\r\n",
        ),
        await _raw_exchange(
            port,
            b"POST /v1/forms/partner-forms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5\r\nConnection: close\r\n\r\n"
            + json.dumps(CANARY).encode()
            + b"\r\nGET / HTTP/1.1\r\n\r\n",
        ),
    ]
    assert all(answer.split(b" ", 2)[1].startswith(b"4") for answer in answers), answers
    logged = log_output.getvalue()
    assert "library_log" in logged or '"status": 4' in logged
    for value in ("SECRET-TOKEN-123", "QUERY-SECRET-9", *CANARY_VALUES):
        assert value not in logged
