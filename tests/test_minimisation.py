"""Minimisation: only name, e-mail, phone and message are stored; nothing else leaves a trace."""

from __future__ import annotations

import json

from tests.support import ORIGIN, dump_database, sign_standard

# Values that must never be stored anywhere (each distinctive enough to grep for).
EXTRAS = {
    "ip": "203.0.113.77",
    "ip_address": "198.51.100.23",
    "user_agent": "Mozilla/5.0 CanaryBrowser/9.9",
    "ga_client_id": "GA1.2.1234567890.9876543210",
    "utm_source": "canary-campaign-utm",
    "page_url": "https://www.qualitydesk.com/secret-landing-page",
    "hidden_field": "hidden-canary-value",
    "cookie": "sessionid=canary-cookie-value",
}
NESTED = {
    "meta": {"ip": "192.0.2.99", "deep": {"fbclid": "fbclid-canary-deep", "list": ["list-canary-item"]}}
}


def _no_extras(dump: str) -> None:
    for value in [*EXTRAS.values(), "192.0.2.99", "fbclid-canary-deep", "list-canary-item"]:
        assert value not in dump, f"{value!r} was stored"


async def test_a_json_payload_full_of_extras_stores_only_the_four_fields(client, db):
    payload = {
        "name": "Maija",
        "email": "maija@example.fi",
        "message": "hi",
        **EXTRAS,
        **NESTED,
        "consents": {"marketing-email-v1": False, "extra": {"ip": "192.0.2.99"}},
    }
    payload["consents"].pop("extra")
    body = json.dumps(payload).encode()
    response = await client.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
    assert response.status == 201
    dump = await dump_database(db)
    assert "maija@example.fi" in dump  # the dump does see stored values
    _no_extras(dump)


async def test_a_form_post_full_of_hidden_fields_stores_only_the_four_fields(client, db):
    form = {
        "name": "Maija",
        "email": "maija@example.fi",
        "message": "hi",
        **EXTRAS,
        "meta[ip]": "192.0.2.99",
        "deep.fbclid": "fbclid-canary-deep",
        "list": "list-canary-item",
    }
    response = await client.post(
        "/v1/forms/website-contact",
        data=form,
        headers={
            "Origin": ORIGIN,
            "Accept": "application/json",
            "User-Agent": EXTRAS["user_agent"],
            "X-Forwarded-For": EXTRAS["ip"],
        },
    )
    assert response.status == 201
    dump = await dump_database(db)
    assert "maija@example.fi" in dump
    _no_extras(dump)


async def test_the_stored_columns_are_exactly_the_minimal_set(db):
    columns = await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'crm' ORDER BY table_name, ordinal_position"
    )
    by_view: dict[str, list[str]] = {}
    for row in columns:
        by_view.setdefault(row["table_name"], []).append(row["column_name"])
    assert by_view["contacts"] == [
        "contact_id",
        "name",
        "email",
        "phone",
        "first_seen_at",
        "last_seen_at",
        "marketing_allowed",
    ]
    assert by_view["submissions"] == [
        "submission_id",
        "seq",
        "contact_id",
        "source",
        "channel",
        "message",
        "purposes",
        "received_at",
        # what the submission itself said (a browser form never rewrites crm.contacts)
        "name",
        "email",
        "phone",
    ]
    assert by_view["consents"] == ["contact_id", "purpose", "granted", "consent_id", "recorded_at"]
