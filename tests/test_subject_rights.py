"""Data subject rights: export, erasure, objection, confirmed opt-in, links, tokens, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ingest import audit, retention, rights
from ingest.links import make_token
from ingest.pseudonyms import email_key
from ingest.store import requests
from ingest.web.keys import POOL, SERVICE
from tests.support import (
    ADMIN_TOKEN,
    ORIGIN,
    PEPPER,
    base_config_dict,
    dump_database,
    make_config,
    sign_standard,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
AUDITOR = {"Authorization": "Bearer auditor-token"}
FORM_HEADERS = {"Origin": ORIGIN, "Accept": "application/json"}
MAIJA = {
    "name": "Maija Meikäläinen",
    "email": "maija@example.fi",
    "phone": "040 123 4567",
    "message": "Maija's private question",
}
OTHER = {"name": "Olli Other", "email": "olli@example.fi", "message": "Olli's words"}


async def _form(client, data: dict[str, str]) -> dict:
    response = await client.post("/v1/forms/website-contact", data=data, headers=FORM_HEADERS)
    assert response.status == 201, await response.text()
    return await response.json()


async def _chat(client, payload: dict, delivery: str | None = None) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    response = await client.post(
        "/v1/chats/partner-chat", data=body, headers=sign_standard(body, msg_id=delivery)
    )
    return response.status, await response.json()


async def test_export_holds_everything_about_the_person_and_nothing_about_others(client):
    await _form(client, MAIJA | {"marketing": "on"})
    await _chat(client, {"email": "MAIJA@example.fi", "message": "A chat question"})
    await _form(client, OTHER)
    opt = await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    assert opt.status == 200
    response = await client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    assert response.status == 200
    document = await response.json()
    assert document["format"] == "qualitydesk-ingest/subject-export/v1"
    [contact] = document["contacts"]
    assert (contact["name"], contact["email"], contact["phone"]) == (
        MAIJA["name"],
        "maija@example.fi",
        "+358401234567",
    )
    assert [s["channel"] for s in contact["submissions"]] == ["form", "chat"]
    form = contact["submissions"][0]
    assert form["message"] == MAIJA["message"]
    assert {p["purpose"]: p["lawful_basis"] for p in form["purposes"]}["direct_marketing"] == "consent"
    history = contact["consent_history"]
    assert [(e["consent_id"], e["granted"]) for e in history] == [
        ("marketing-email-v1", True),
        ("objection-direct-marketing", False),
    ]
    assert history[0]["text"].startswith("Yes, send me QualityDesk news")
    assert document["marketing_suppressed"] is True
    assert document["notice_versions"] == ["2024-01"]
    assert "olli" not in json.dumps(document).lower()


async def test_erasure_leaves_none_of_the_persons_values_in_a_full_dump(client, db):
    await _form(client, MAIJA | {"marketing": "on"})
    await _chat(client, {"phone": "+358401234567", "message": "Chat about my case"})
    await _form(client, OTHER)
    response = await client.delete(
        "/v1/subjects", params={"email": "maija@example.fi", "phone": "040 123 4567"}, headers=ADMIN
    )
    assert response.status == 200
    body = await response.json()
    # The phone-only chat is a contact of its own (a phone never joins an e-mail's contact);
    # asked for by both identifiers, both go.
    assert body["removed"]["contacts"] == 2
    assert body["removed"]["submissions"] == 2
    dump = await dump_database(db)
    for value in (
        "Meikäläinen",
        "maija@example.fi",
        "+358401234567",
        "private question",
        "Chat about my case",
    ):
        assert value not in dump
    assert "olli@example.fi" in dump  # the other person is untouched
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events WHERE contact_id IS NULL") == 1
    events = await db.fetch("SELECT event FROM crm.subject_events")
    assert [e["event"] for e in events] == ["erased", "erased"]  # one per contact
    audit = await db.fetchrow("SELECT actor, action, details FROM ingest.audit_log")
    assert (audit["actor"], audit["action"]) == ("privacy-officer", "erase")
    assert "maija" not in audit["details"]


async def test_a_phone_only_contact_is_reached_by_its_phone_not_through_an_email_beside_it(client, db):
    # A chat that gave only the phone came first, then a form with e-mail and that phone.
    # Anybody can type a phone next to an e-mail, so the e-mail alone does not reach the
    # phone-only contact: the officer is told, and adds --phone once the person shows they hold it.
    status, _ = await _chat(client, {"phone": "+358401234567", "message": "phone-only secret"})
    assert status == 201
    await _form(client, MAIJA)
    # Someone else with their own e-mail who gave the same (family) phone is another person.
    await _form(client, OTHER | {"phone": "040 123 4567"})
    response = await client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    exported = await response.json()
    assert [c["email"] for c in exported["contacts"]] == ["maija@example.fi"]
    assert "phone-only secret" not in json.dumps(exported)
    assert [n["contacts"] for n in exported["review"]] == [1]
    assert "olli" not in json.dumps(exported).lower()
    response = await client.get(
        "/v1/subjects", params={"email": "maija@example.fi", "phone": "040 123 4567"}, headers=ADMIN
    )
    both = await response.json()
    assert sorted(c["email"] or "-" for c in both["contacts"]) == ["-", "maija@example.fi"]
    assert "olli" not in json.dumps(both["contacts"]).lower()  # Olli's contact is reached by Olli's address
    response = await client.delete(
        "/v1/subjects", params={"email": "maija@example.fi", "phone": "040 123 4567"}, headers=ADMIN
    )
    assert response.status == 200
    removed = (await response.json())["removed"]
    assert removed["contacts"] == 2
    assert removed["phone_values_removed"] == 2  # the number beside Olli's address (contact, submission)
    dump = await dump_database(db)
    for value in (
        "phone-only secret",
        "private question",
        "maija@example.fi",
        "Meikäläinen",
        "+358401234567",
    ):
        assert value not in dump
    assert "Olli's words" in dump


async def test_an_erasure_racing_submissions_of_the_same_person_never_fails(client, db):
    import asyncio

    await _form(client, MAIJA)

    async def submit(i: int) -> int:
        status, _ = await _chat(client, {"email": "maija@example.fi", "message": f"again {i}"})
        return status

    async def erase() -> int:
        response = await client.delete("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
        return response.status

    for _ in range(3):
        statuses = await asyncio.gather(
            *(submit(i) for i in range(10)), erase(), *(submit(i) for i in range(10))
        )
        assert set(statuses) <= {200, 201}, statuses


async def test_a_provider_retrying_an_old_delivery_after_erasure_does_not_bring_data_back(client, db):
    status, first = await _chat(
        client, {"email": "maija@example.fi", "message": "hello"}, delivery="msg_old_1"
    )
    assert status == 201
    await client.delete("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    status, again = await _chat(
        client, {"email": "maija@example.fi", "message": "hello"}, delivery="msg_old_1"
    )
    assert (status, again) == (200, {"status": "duplicate", "submission_id": first["submission_id"]})
    assert "maija@example.fi" not in await dump_database(db)


async def test_erasure_removes_pending_chat_pieces(client, db, config):
    from ingest.domain import RawSubmission

    service = client.app[SERVICE]
    raw = RawSubmission(fields={"name": "Maija", "message": "piece"}, optional_contact=True, session_key="s9")
    await service.accept(config.sources["partner-chat"], raw, datetime.now(UTC))
    await db.execute('UPDATE ingest.pending_chats SET fields = fields || \'{"phone": "+358401234567"}\'')
    response = await client.delete("/v1/subjects", params={"phone": "+358401234567"}, headers=ADMIN)
    assert (await response.json())["removed"]["pending_chats"] == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


async def test_an_objection_survives_erasure_and_a_new_opt_in_from_the_form(client, db):
    await _form(client, MAIJA | {"marketing": "on"})
    await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    await client.delete("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    await _form(client, MAIJA | {"marketing": "on"})  # anyone can type anyone's address
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    assert await db.fetchval("SELECT granted FROM crm.consents") is True  # recorded, not honoured


async def test_a_confirmed_opt_in_lifts_the_suppression(client, db):
    await _form(client, MAIJA | {"marketing": "on"})
    await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    token = make_token(
        PEPPER,
        "confirm",
        email_key(PEPPER, "maija@example.fi"),
        datetime.now(UTC),
        consent_id="marketing-email-v1",
    )
    page = await client.get("/v1/confirm", params={"token": token})
    assert page.status == 200
    assert "Yes, send me QualityDesk news" in await page.text()
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False  # GET changes nothing
    confirmed = await client.post("/v1/confirm", params={"token": token})
    assert confirmed.status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


async def test_one_click_unsubscribe_records_the_objection_without_login(client, db):
    await _form(client, MAIJA | {"marketing": "on"})
    token = make_token(PEPPER, "unsubscribe", email_key(PEPPER, "maija@example.fi"), datetime.now(UTC))
    page = await client.get("/v1/unsubscribe", params={"token": token})
    assert page.status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True
    response = await client.post(
        "/v1/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    assert await db.fetchval("SELECT event FROM crm.subject_events") == "marketing_opt_out"


@pytest.mark.parametrize("kind", ["forged", "expired", "wrong-action", "garbage"])
async def test_forged_or_expired_links_are_refused(client, db, kind):
    await _form(client, MAIJA | {"marketing": "on"})
    key = email_key(PEPPER, "maija@example.fi")
    tokens = {
        "forged": make_token("another-pepper", "unsubscribe", key, datetime.now(UTC)),
        "expired": make_token(PEPPER, "unsubscribe", key, datetime.now(UTC) - timedelta(days=31)),
        "wrong-action": make_token(
            PEPPER, "confirm", key, datetime.now(UTC), consent_id="marketing-email-v1"
        ),
        "garbage": "not.a-token",
    }
    response = await client.post("/v1/unsubscribe", params={"token": tokens[kind]})
    assert response.status == 400
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/subjects?email=maija@example.fi", {}, 401),
        ("GET", "/v1/subjects?email=maija@example.fi", {"Authorization": "Bearer wrong"}, 401),
        ("GET", "/v1/subjects?email=maija@example.fi", {"Authorization": f"Basic {ADMIN_TOKEN}"}, 401),
        ("DELETE", "/v1/subjects?email=maija@example.fi", AUDITOR, 403),
        ("POST", "/v1/subjects/opt-out", AUDITOR, 403),
        ("GET", "/v1/subjects?email=maija@example.fi", AUDITOR, 200),
    ],
)
async def test_admin_endpoints_need_a_valid_token_with_the_scope(client, db, method, path, headers, status):
    await _form(client, MAIJA)
    response = await client.request(method, path, headers=headers, json={"email": "maija@example.fi"})
    assert response.status == status
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 1
    if status == 401:
        assert await response.json() == {"error": "unauthorized"}
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_an_export_request_without_an_identifier_gets_422(client):
    response = await client.get("/v1/subjects", headers=ADMIN)
    assert response.status == 422
    bad = await client.get("/v1/subjects", params={"email": "nope"}, headers=ADMIN)
    assert (await bad.json())["fields"] == {"email": ["Not a valid e-mail address."]}


async def test_purge_with_a_frozen_clock_removes_exactly_the_expired_contacts(client, db):
    await _form(client, {"email": "old@example.fi", "message": "old"})
    await _form(client, {"email": "recent@example.fi", "message": "recent"})
    await _form(client, {"email": "marketing@example.fi", "marketing": "on"})
    now = datetime.now(UTC)
    # contact: 730 days, customer_relationship: 1095 days, direct_marketing: 730 days.
    await db.execute(
        "UPDATE ingest.contacts SET last_seen_at = $1 WHERE email = 'old@example.fi'",
        now - timedelta(days=1096),
    )
    await db.execute(
        "UPDATE ingest.contacts SET last_seen_at = $1 WHERE email = 'recent@example.fi'",
        now - timedelta(days=1094),
    )
    await db.execute(
        "UPDATE ingest.contacts SET last_seen_at = $1 WHERE email = 'marketing@example.fi'",
        now - timedelta(days=800),
    )
    pool = client.app[POOL]
    dry = await retention.purge(pool, now, "test", PEPPER, dry_run=True)
    assert dry["contacts"] == 1
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 3
    report = await retention.purge(pool, now, "test", PEPPER)
    assert report["contacts"] == 1
    remaining = {r["email"] for r in await db.fetch("SELECT email FROM crm.contacts")}
    assert remaining == {"recent@example.fi", "marketing@example.fi"}
    assert await db.fetchval("SELECT action FROM ingest.audit_log ORDER BY audit_id DESC LIMIT 1") == "purge"


async def test_the_audit_log_refuses_update_delete_and_truncate(client, db):
    await client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    assert await db.fetchval("SELECT count(*) FROM ingest.audit_log") == 1
    for statement in (
        "UPDATE ingest.audit_log SET actor = 'x'",
        "DELETE FROM ingest.audit_log",
        "TRUNCATE ingest.audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute(statement)


async def test_audit_verify_finds_the_first_tampered_consent_event(client, db):
    for i in range(3):
        await _form(client, {"email": f"p{i}@example.fi", "marketing": "on"})
    pool = client.app[POOL]
    assert all(r.ok for r in await audit.verify_chains(pool, PEPPER))
    second = await db.fetchval(
        "SELECT event_id FROM ingest.consent_events ORDER BY event_id OFFSET 1 LIMIT 1"
    )
    # A superuser bypassing the append-only trigger, as an attacker with DB access would.
    await db.execute("ALTER TABLE ingest.consent_events DISABLE TRIGGER consent_events_append_only")
    await db.execute("UPDATE ingest.consent_events SET granted = false WHERE event_id = $1", second)
    [consents, _] = await audit.verify_chains(pool, PEPPER)
    assert consents.line.startswith(f"consent_events: BROKEN at position 2 (id {second})"), consents.line


async def test_audit_verify_notices_rows_removed_from_the_end_of_a_chain(client, db):
    pool = client.app[POOL]
    for i in range(3):
        await client.post("/v1/subjects/opt-out", json={"email": f"p{i}@example.fi"}, headers=ADMIN)
    assert all(r.ok for r in await audit.verify_chains(pool, PEPPER))
    await db.execute("ALTER TABLE ingest.audit_log DISABLE TRIGGER audit_log_immutable")
    await db.execute(
        "DELETE FROM ingest.audit_log WHERE audit_id = (SELECT max(audit_id) FROM ingest.audit_log)"
    )
    [_, audit_report] = await audit.verify_chains(pool, PEPPER)
    assert audit_report.line.startswith("audit_log: BROKEN after position 2: the recorded head (3)"), (
        audit_report.line
    )


async def test_audit_rows_written_concurrently_verify_whatever_order_their_ids_came_in(client, db):
    import asyncio

    pool = client.app[POOL]
    await asyncio.gather(
        *(
            client.post("/v1/subjects/opt-out", json={"email": f"c{i}@example.fi"}, headers=ADMIN)
            for i in range(20)
        )
    )
    assert await db.fetchval("SELECT count(*) FROM ingest.audit_log") == 20
    assert all(r.ok for r in await audit.verify_chains(pool, PEPPER))


async def test_open_requests_are_listed_with_their_deadline_and_closed_when_answered(client, db, config):
    pool = client.app[POOL]
    subject = rights.subject_from(config, "maija@example.fi")
    await rights.record_request(pool, subject, "access", PEPPER, "cli")
    async with pool.acquire() as conn:
        [request] = await requests.open_requests(conn)
        assert request["kind"] == "access"
        assert request["due_at"] - request["received_at"] >= timedelta(days=28)
        await conn.execute("UPDATE ingest.subject_requests SET due_at = now() - interval '1 day'")
        assert await requests.count_overdue(conn) == 1
    await client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
    async with pool.acquire() as conn:
        assert await requests.open_requests(conn) == []


async def test_a_consent_id_whose_wording_changed_stops_the_start(db_dsn):
    from ingest.errors import ConfigError
    from ingest.store.startup import sync_consent_texts

    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        await sync_consent_texts(pool, make_config())  # first start records the wording
        raw = base_config_dict()
        raw["consents"]["marketing-email-v1"]["text"] = "Different words under the same id."
        with pytest.raises(ConfigError, match=r"consents.marketing-email-v1"):
            await sync_consent_texts(pool, make_config(raw))
    finally:
        await pool.close()


def test_the_record_of_processing_lists_purposes_bases_and_retention(config):
    from ingest import ropa

    text = ropa.render(config)
    assert "| direct_marketing | consent | 730 days |" in text
    assert "| website-contact | form | html | contact, customer_relationship |" in text
    assert "Art. 32" in text


async def test_an_export_whose_connection_is_cut_mid_transaction_is_retried_not_a_500(make_client, db):
    # Every right retries its whole transaction on a transient failure (this was a 500).
    # A generous deadline: on a loaded machine the export may take more than the default 3 s
    # to reach our lock, and a 503 then is right but not what this test is about.
    import asyncio

    raw = base_config_dict()
    raw["limits"] = {"request_deadline_seconds": 30}
    client = await make_client(make_config(raw))
    await _form(client, MAIJA)
    async with db.transaction():
        await db.execute("LOCK TABLE ingest.contacts IN ACCESS EXCLUSIVE MODE")
        export = asyncio.ensure_future(
            client.get("/v1/subjects", params={"email": "maija@example.fi"}, headers=ADMIN)
        )
        # Wait for the event itself (the export's backend waiting inside its transaction
        # for our lock), however long a loaded machine takes to get there: a 2 s budget
        # failed once. Only an export that ends without ever waiting stops the wait.
        blocked = None
        while not blocked and not export.done():
            blocked = await db.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            await asyncio.sleep(0 if blocked else 0.02)
        assert blocked, f"the export ended without waiting for the lock: {export.result().status}"
        await db.execute("SELECT pg_terminate_backend($1)", blocked)
    response = await export
    assert response.status == 200
    assert (await response.json())["contacts"][0]["email"] == "maija@example.fi"
