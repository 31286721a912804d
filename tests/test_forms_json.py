"""Canonical JSON signed with Standard Webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tests.support import PARTNER_SECRET, base_config_dict, make_config, secrets_environ, sign_standard

URL = "/v1/forms/partner-forms"
PAYLOAD = {
    "name": "Maija Meikäläinen",
    "email": "maija@example.fi",
    "phone": "040 123 4567",
    "message": "Please call me.",
    "consents": {"marketing-email-v1": True},
}
SAMPLES = Path(__file__).resolve().parent / "fixtures"


def signed(payload: object, **kwargs) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, sign_standard(body, **kwargs)


def test_the_published_standard_webhooks_test_vector_signs_as_documented():
    # tests/fixtures/standardwebhooks-test_vector.json: the spec's own Python test.
    from datetime import UTC, datetime

    body = (SAMPLES / "standardwebhooks-test_vector.json").read_bytes()
    spec_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's test secret (also the README's)
    signature = Webhook(spec_secret).sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", datetime.fromtimestamp(1614265330, tz=UTC), body.decode()
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


async def test_a_signed_submission_is_created(client, db):
    body, headers = signed(PAYLOAD)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 201
    submission_id = (await response.json())["submission_id"]
    row = await db.fetchrow(
        "SELECT c.email, c.marketing_allowed, s.source, s.channel FROM crm.submissions s "
        "JOIN crm.contacts c USING (contact_id) WHERE s.submission_id = $1::uuid",
        submission_id,
    )
    assert dict(row) == {
        "email": "maija@example.fi",
        "marketing_allowed": True,
        "source": "partner-forms",
        "channel": "form",
    }


async def test_a_redelivery_answers_200_with_the_first_id_and_writes_nothing(client, db):
    body, headers = signed(PAYLOAD)
    first = await (await client.post(URL, data=body, headers=headers)).json()
    again = await client.post(URL, data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events") == 1


async def test_the_same_delivery_posted_20_times_at_once_yields_one_submission(client, db):
    body, headers = signed(PAYLOAD)
    responses = await asyncio.gather(*(client.post(URL, data=body, headers=headers) for _ in range(20)))
    bodies = [await r.json() for r in responses]
    assert sorted(r.status for r in responses) == [200] * 19 + [201]
    assert len({b["submission_id"] for b in bodies}) == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"webhook-signature": "v1,AAAA"},
        lambda h: h | {"webhook-signature": "garbage-without-comma"},
        lambda h: h | {"webhook-signature": "v1,!!!not base64!!!"},
        lambda h: {k: v for k, v in h.items() if k != "webhook-signature"},
        lambda h: {k: v for k, v in h.items() if k != "webhook-timestamp"},
        lambda h: h | {"webhook-timestamp": "yesterday"},
        lambda h: h | {"webhook-id": "msg_other"},
    ],
    ids=["wrong", "no-comma", "bad-base64", "missing", "no-timestamp", "bad-timestamp", "other-id"],
)
async def test_a_bad_signature_gets_401(client, db, mangle):
    body, headers = signed(PAYLOAD)
    response = await client.post(URL, data=body, headers=mangle(headers))
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_signature_made_with_another_secret_gets_401(client):
    body, headers = signed(PAYLOAD, secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 401


@pytest.mark.parametrize("age", [-400, 400])
async def test_a_replay_outside_the_five_minute_window_gets_401(client, age):
    body, headers = signed(PAYLOAD, timestamp=time.time() - age)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 401


async def test_a_rotated_secret_and_the_old_one_both_verify(aiohttp_client, db_dsn, log_output):
    from ingest.web.app import create_app
    from tests.support import PEPPER

    raw = base_config_dict()
    raw["sources"]["partner-forms"]["secret_env"] = ["PARTNER_FORMS_SECRET", "PARTNER_FORMS_SECRET_NEW"]
    new_secret = "whsec_" + "bmV3LXNlY3JldC1mb3Itcm90YXRpb24tMTIzNA=="
    config = make_config(raw, secrets_environ() | {"PARTNER_FORMS_SECRET_NEW": new_secret})
    client = await aiohttp_client(create_app(config, db_dsn, PEPPER))
    for secret in (PARTNER_SECRET, new_secret):
        body, headers = signed(PAYLOAD, secret=secret)
        assert (await client.post(URL, data=body, headers=headers)).status == 201


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"email": "a@example.fi", "email": "b@example.fi"}',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"n": ' + b"9" * 5000 + b"}",
        b'{"x": NaN}',
        b"\xff\xfe{}",
    ],
    ids=["broken", "array", "duplicate-keys", "deep", "huge-number", "nan", "not-utf8"],
)
async def test_an_unparseable_signed_body_gets_400(client, body):
    headers = (
        sign_standard(body.decode("utf-8", "replace").encode())
        if body.startswith(b"\xff")
        else sign_standard(body)
    )
    response = await client.post(URL, data=body, headers=headers)
    assert response.status in (400, 401)  # a non-UTF-8 body cannot carry a valid signature
    if not body.startswith(b"\xff"):
        assert await response.json() == {"error": "malformed_body"}


async def test_first_and_last_name_make_the_name(client, db):
    body, headers = signed({"first_name": "Maija", "last_name": "Meikäläinen", "email": "m@example.fi"})
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT name FROM crm.contacts") == "Maija Meikäläinen"


async def test_an_unknown_consent_id_gets_422(client, db):
    body, headers = signed(PAYLOAD | {"consents": {"newsletter-v9": True}})
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 422
    assert (await response.json())["fields"] == {"consents": ["Unknown consent id."]}  # not echoed


async def test_a_wrong_content_type_gets_415(client):
    body, headers = signed(PAYLOAD)
    response = await client.post(URL, data=body, headers=headers | {"Content-Type": "text/plain"})
    assert response.status == 415


async def test_a_chat_without_email_or_phone_is_acknowledged_and_stores_nothing(client, db):
    body, headers = signed({"name": "Visitor", "message": "Hello?"})
    response = await client.post("/v1/chats/partner-chat", data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert await db.fetchval("SELECT count(*) FROM ingest.deliveries") == 0


async def test_a_chat_with_an_email_is_stored_on_the_chat_channel(client, db):
    body, headers = signed({"email": "chatter@example.fi", "message": "Hello"})
    response = await client.post("/v1/chats/partner-chat", data=body, headers=headers)
    assert response.status == 201
    assert await db.fetchval("SELECT channel FROM crm.submissions") == "chat"
