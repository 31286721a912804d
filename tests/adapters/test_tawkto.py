"""tawk.to webhooks: chat:start and ticket:create, signed with X-Tawk-Signature (hex HMAC-SHA1).

Payloads: tests/fixtures/tawkto/. chat_start.json, chat_end.json and ticket_create.json are the samples
of tawk.to's "Webhooks" page (https://developer.tawk.to/webhooks/), taken from public copies of it (the
page's own sample section could not be retrieved; see the README). chat_start-live.json has the shape
of a delivery captured by a public integration (no visitor e-mail). chat_start-prechat.json is
constructed on that shape with a four-line pre-chat form (see the README). tawk.to publishes no
signature test vector; the one here is self-computed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.tawkto import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature
from tests.support import ADMIN_TOKEN, config_with_source, dump_database

SECRET = "tawk-webhook-secret-0123456789abcdef"
URL = "/v1/chats/tawk"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "tawkto"
CHAT_START = (FIXTURES / "chat_start.json").read_bytes()  # as the docs print it
CHAT_START_COMPACT = (FIXTURES / "chat_start-compact.json").read_bytes()
CHAT_END = (FIXTURES / "chat_end.json").read_bytes()
TICKET_CREATE = json.loads((FIXTURES / "ticket_create.json").read_text())
CHAT_START_LIVE = (FIXTURES / "chat_start-live.json").read_bytes()
CHAT_START_PRECHAT = (FIXTURES / "chat_start-prechat.json").read_bytes()
# Self-computed (Python hmac and openssl): HMAC-SHA1("test_secret", chat_start-compact.json).
VECTOR_SECRET = "test_secret"
VECTOR_SIGNATURE = "1b1ee0bdb5fadd89a2d2a5f7dd4ea3be9551f4e0"
UNKEYED = hashlib.sha1(CHAT_START).hexdigest()  # noqa: S324 - a plain digest, not an HMAC: must fail
CONTACT_ROW = (
    "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel "
    "FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
)


def tawk_config(secrets=(SECRET,), **source):
    names = [f"TAWK_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "tawk",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="chat",
        format="tawkto",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def signed(body: bytes, secret: str = SECRET, event_id: str | None = "evt-1") -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Tawk-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
    }
    if event_id is not None:
        headers["X-Hook-Event-Id"] = event_id
    return headers


async def deliver(client, payload: dict | bytes, event_id: str | None = "evt-1", secret: str = SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await client.post(URL, data=body, headers=signed(body, secret, event_id))


def chat_start(**changes) -> dict:
    payload = json.loads(CHAT_START)
    payload.update(changes)
    return payload


def ticket(requester_type: str | None = "visitor", **ticket_changes) -> dict:
    payload = copy.deepcopy(TICKET_CREATE)
    if requester_type is None:
        del payload["requester"]["type"]
    else:
        payload["requester"]["type"] = requester_type
    payload["ticket"].update(ticket_changes)
    return payload


def inbound(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type="application/json",
        received_at=datetime.now(UTC),
    )


# --- the documented payloads end to end ----------------------------------------------------------


async def test_the_documented_chat_start_stores_the_visitor_without_the_placeholder_name(make_client, db):
    client = await make_client(tawk_config())
    response = await deliver(client, CHAT_START)
    assert response.status == 201
    created = await response.json()
    assert created["status"] == "created"
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": None,  # V1561719148780935 is tawk.to's made-up name, not the visitor's
        "email": "hello@test.com",
        "phone": None,
        "message": "Sample message",
        "source": "tawk",
        "channel": "chat",
    }
    stored = await dump_database(db)
    for dropped in (
        "V1561719148780935",
        "jelgava",
        "Bobs Burgers",
        "58ca8453b8a7e060cd3b1ecb",
        "70fe3290-99ad-11e9-a30a-51567162179f",
        "2019-06-28T14:03:04",
    ):
        assert dropped not in stored


async def test_a_ticket_from_the_offline_form_stores_the_requester_and_the_subject_with_the_message(
    make_client, db
):
    client = await make_client(tawk_config())
    response = await deliver(client, ticket("visitor"))
    assert response.status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == (
        "Martins",
        "martins@tawk.to",
        "Testing\n\nOnce more through the breach",
    )
    stored = await dump_database(db)
    for dropped in ("02598050-99ae-11e9-8887-97564881b95b", "Bobs Burgers"):
        assert dropped not in stored


async def test_a_ticket_without_a_requester_type_is_a_visitors_too(make_client, db):
    client = await make_client(tawk_config())
    assert (await deliver(client, ticket(None))).status == 201


async def test_the_documented_ticket_an_agent_opened_is_acknowledged_and_not_stored(make_client, db):
    client = await make_client(tawk_config())
    response = await deliver(client, TICKET_CREATE)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "agent_ticket"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subject": "", "message": "Only a message"}, "Only a message"),
        ({"subject": "Only a subject", "message": None}, "Only a subject"),
        ({"subject": "Same", "message": "Same"}, "Same"),
        ({"subject": 3, "message": ["x"]}, None),
    ],
    ids=["no-subject", "no-message", "same", "odd-types"],
)
async def test_a_tickets_subject_and_message_make_one_text(make_client, db, changes, message):
    client = await make_client(tawk_config())
    assert (await deliver(client, ticket(**changes))).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == message


async def test_a_live_chat_start_without_an_email_is_acknowledged_and_leaves_no_trace(make_client, db):
    client = await make_client(tawk_config())
    response = await deliver(client, CHAT_START_LIVE)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    stored = await dump_database(db)
    for dropped in ("Ana Gómez", "Nombre de La Empresa"):
        assert dropped not in stored


async def test_a_real_name_is_kept(make_client, db):
    payload = chat_start(visitor={"name": "Vera Virtanen", "email": "vera@example.fi"})
    client = await make_client(tawk_config())
    assert (await deliver(client, payload)).status == 201
    assert await db.fetchval("SELECT name FROM crm.contacts") == "Vera Virtanen"


@pytest.mark.parametrize("name", ["V1561719148780935", " V42 ", "V0"])
def test_generated_visitor_names_are_never_names(name):
    source = tawk_config().sources["tawk"]
    body = json.dumps(chat_start(visitor={"name": name, "email": "a@example.com"})).encode()
    (item,) = ADAPTER.parse(source, inbound(body, signed(body)))
    assert isinstance(item, RawSubmission)
    assert item.fields == {"email": "a@example.com", "message": "Sample message"}


# --- signature ---------------------------------------------------------------------------------


def test_the_self_computed_vector_verifies():
    source = tawk_config(secrets=(VECTOR_SECRET,)).sources["tawk"]
    headers = {"X-Tawk-Signature": VECTOR_SIGNATURE, "X-Hook-Event-Id": "ad8c0e1f-test"}
    (item,) = ADAPTER.parse(source, inbound(CHAT_START_COMPACT, headers))
    assert item == RawSubmission(
        fields={"email": "hello@test.com", "message": "Sample message"},
        # X-Hook-Event-Id is not signed: the id comes from the signed body.
        delivery_id="chat:start:70fe3290-99ad-11e9-a30a-51567162179f:2019-06-28T14:03:04.646Z",
        optional_contact=True,
    )


def test_the_vector_does_not_verify_over_the_pretty_printed_bytes():
    # The signature is over the raw bytes: the same JSON laid out differently is another body.
    source = tawk_config(secrets=(VECTOR_SECRET,)).sources["tawk"]
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, inbound(CHAT_START, {"X-Tawk-Signature": VECTOR_SIGNATURE}))


async def test_the_vector_goes_through_http(make_client, db):
    client = await make_client(tawk_config(secrets=(VECTOR_SECRET,)))
    headers = {"Content-Type": "application/json", "X-Tawk-Signature": VECTOR_SIGNATURE}
    response = await client.post(URL, data=CHAT_START_COMPACT, headers=headers)
    assert response.status == 201


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"X-Tawk-Signature": "0" * 40},
        lambda h: h | {"X-Tawk-Signature": h["X-Tawk-Signature"][:-2]},
        lambda h: h | {"X-Tawk-Signature": "sha1=" + h["X-Tawk-Signature"]},
        lambda h: h | {"X-Tawk-Signature": "zz" * 20},
        lambda h: h | {"X-Tawk-Signature": ""},
        lambda h: h | {"X-Tawk-Signature": UNKEYED},
        lambda h: {k: v for k, v in h.items() if k != "X-Tawk-Signature"},
        lambda h: h | {"X-Tawk-Signature": hmac.new(SECRET.encode(), CHAT_START, hashlib.sha256).hexdigest()},
    ],
    ids=["wrong", "short", "prefixed", "not-hex", "empty", "unkeyed", "missing", "sha256"],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(tawk_config())
    response = await client.post(URL, data=CHAT_START, headers=mangle(signed(CHAT_START)))
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_body_signed_with_another_secret_gets_401(make_client, db):
    client = await make_client(tawk_config())
    assert (await deliver(client, CHAT_START, secret="someone-elses-secret")).status == 401


async def test_a_body_changed_after_signing_gets_401(make_client, db):
    client = await make_client(tawk_config())
    headers = signed(CHAT_START)
    tampered = CHAT_START.replace(b"hello@test.com", b"evil@test.com")
    assert (await client.post(URL, data=tampered, headers=headers)).status == 401


async def test_an_uppercase_hex_signature_verifies(make_client, db):
    client = await make_client(tawk_config())
    headers = signed(CHAT_START)
    headers["X-Tawk-Signature"] = headers["X-Tawk-Signature"].upper()
    assert (await client.post(URL, data=CHAT_START, headers=headers)).status == 201


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client, db):
    client = await make_client(tawk_config(secrets=("old-tawk-secret", SECRET)))
    assert (await deliver(client, CHAT_START, event_id="a", secret="old-tawk-secret")).status == 201
    assert (await deliver(client, ticket(), event_id="b", secret=SECRET)).status == 201


# --- idempotency and events we do not keep ---------------------------------------------------------


async def test_a_retry_with_the_same_event_id_is_a_duplicate_of_the_first(make_client, db):
    client = await make_client(tawk_config())
    first = await (await deliver(client, CHAT_START, event_id="5a7c0b1e-retry")).json()
    again = await deliver(client, CHAT_START, event_id="5a7c0b1e-retry")
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


async def test_without_an_event_id_header_the_same_signed_body_is_one_delivery(make_client, db):
    client = await make_client(tawk_config())
    assert (await deliver(client, CHAT_START, event_id=None)).status == 201
    assert (await deliver(client, CHAT_START, event_id="   ")).status == 200
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


async def test_a_replay_with_a_fresh_event_id_after_erasure_does_not_store_the_person_again(make_client, db):
    # X-Hook-Event-Id is not signed: a captured chat:start replayed with a new one is the same delivery.
    client = await make_client(tawk_config())
    first = await (await deliver(client, CHAT_START, event_id="evt-original")).json()
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    email = json.loads(CHAT_START)["visitor"]["email"]
    erased = await client.delete("/v1/subjects", params={"email": email}, headers=headers)
    assert erased.status == 200
    replay = await deliver(client, CHAT_START, event_id="evt-forged-fresh-id")
    assert replay.status == 200
    assert await replay.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert email not in await dump_database(db)


async def test_a_ticket_without_its_ids_is_identified_by_the_digest_of_its_signed_body(make_client, db):
    client = await make_client(tawk_config())
    body = {"event": "ticket:create", "requester": {"email": "a@example.com"}, "ticket": {"message": "hi"}}
    assert (await deliver(client, body, event_id="1")).status == 201
    assert (await deliver(client, body, event_id="2")).status == 200


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (CHAT_END, "unsupported_event"),
        ({"event": "chat:transcript_created", "chat": {"id": "x"}}, "unsupported_event"),
        ({"event": ["chat:start"]}, "unsupported_event"),
        ({}, "unsupported_event"),
        (
            chat_start(message={"text": "Hi, agent here", "type": "msg", "sender": {"type": "agent"}}),
            "not_from_the_visitor",
        ),
        (chat_start(message={"text": "Hi"}), "not_from_the_visitor"),
    ],
    ids=["chat-end", "transcript", "event-list", "no-event", "agent-first", "no-sender"],
)
async def test_events_other_than_a_visitors_start_or_ticket_are_acknowledged_and_ignored(
    make_client, db, payload, reason
):
    client = await make_client(tawk_config())
    response = await deliver(client, payload)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": reason}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert "Hi, agent here" not in await dump_database(db)


async def test_a_chat_start_without_contact_fields_is_ignored(make_client, db):
    client = await make_client(tawk_config())
    response = await deliver(client, chat_start(visitor={"name": "V1561719148780935", "city": "jelgava"}))
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}


# --- type surprises -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        chat_start(visitor={"email": ["hello@test.com"]}),
        chat_start(visitor={"email": {"address": "hello@test.com"}}),
        chat_start(visitor={"email": 42, "name": 7}),
        chat_start(visitor={"email": "<script>@x", "name": "<b>Bob</b>" * 100}),
        chat_start(visitor=None),
        chat_start(visitor="hello@test.com"),
        chat_start(message=None),
        chat_start(message={"text": ["Sample"], "sender": {"type": "visitor"}}),
        chat_start(message={"text": "x" * 20_000, "sender": {"type": "visitor"}}),
        chat_start(message={"sender": "visitor", "text": "hi"}),
        chat_start(message={"sender": {"type": ["visitor"]}, "text": "hi"}),
        chat_start(message={"text": "   ", "sender": {"type": "visitor"}}),
        ticket(requester_type="visitor") | {"requester": None},
        ticket(requester_type="visitor") | {"ticket": "Testing"},
        ticket(requester_type=["agent"]),
        {"event": "ticket:create", "requester": {"email": "a@example.com"}, "ticket": None},
    ],
    ids=[
        "email-list",
        "email-object",
        "numbers",
        "html",
        "visitor-null",
        "visitor-string",
        "message-null",
        "text-list",
        "huge-text",
        "sender-string",
        "sender-type-list",
        "blank-text",
        "requester-null",
        "ticket-string",
        "requester-type-list",
        "bare-ticket",
    ],
)
async def test_surprising_types_never_cause_a_server_error(make_client, db, payload):
    client = await make_client(tawk_config())
    response = await deliver(client, payload)
    assert response.status in (201, 202)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"event": "a", "event": "b"}', b"\xff\xfe{}", b""],
    ids=["broken", "array", "duplicate-keys", "not-utf8", "empty"],
)
async def test_an_unparseable_body_with_a_good_signature_gets_400(make_client, body):
    client = await make_client(tawk_config())
    response = await client.post(URL, data=body, headers=signed(body))
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


async def test_an_unparseable_body_with_a_bad_signature_gets_401(make_client):
    client = await make_client(tawk_config())
    headers = signed(b"{not json") | {"X-Tawk-Signature": "0" * 40}
    assert (await client.post(URL, data=b"{not json", headers=headers)).status == 401


async def test_a_form_encoded_body_gets_415(make_client):
    client = await make_client(tawk_config())
    body = b"event=chat%3Astart"
    headers = signed(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post(URL, data=body, headers=headers)).status == 415


# --- configuration ------------------------------------------------------------------------------


def test_options_are_refused_at_start_up():
    with pytest.raises(ConfigError, match=r"sources\.tawk\.options\.hook: unknown option"):
        tawk_config(options={"hook": "x"})


def test_field_mappings_are_refused_because_tawk_has_no_form_fields():
    with pytest.raises(ConfigError, match=r"sources\.tawk\.fields"):
        tawk_config(fields={"email": "mail"})


# --- Pre-chat form answers (issue 16.5) ----------------------------------------------------------


def prechat(text: str, **visitor) -> dict:
    payload = json.loads(CHAT_START_PRECHAT)
    payload["message"]["text"] = text
    payload["visitor"].update(visitor)
    return payload


async def test_pre_chat_lines_are_read_only_with_the_option(make_client, db):
    # Off by default: the capture's shape (no visitor.email) is acknowledged and nothing is stored.
    client = await make_client(tawk_config())
    response = await deliver(client, CHAT_START_PRECHAT)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_with_the_option_the_email_and_phone_lines_fill_the_contact_and_the_rest_is_the_message(
    make_client, db
):
    client = await make_client(tawk_config(options={"prechat_form": True}))
    response = await deliver(client, CHAT_START_PRECHAT)
    assert response.status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": "Maija Meikäläinen",
        "email": "maija@example.fi",
        "phone": "+358401234567",
        "message": "Name : Maija Meikäläinen\nQuestion : Do you deliver to Oulu?",
        "source": "tawk",
        "channel": "chat",
    }


@pytest.mark.parametrize(
    "text",
    [
        "Nimi : Maija\nSähköposti : maija@example.fi\nPuhelin: 040 123 4567\nViesti : Soittakaa",
        "Namn : Maija\rE-post : maija@example.fi\rTelefon : 040 123 4567\rMeddelande : Ring mig",
        "name:Maija\r\nE-MAIL ADDRESS * :  maija@example.fi \r\nmobile number: 040 123 4567\r\nmessage: Call me",
    ],
    ids=["finnish", "swedish", "english-spacing-and-required-marker"],
)
async def test_finnish_swedish_and_english_labels_are_read_by_default(make_client, db, text):
    client = await make_client(tawk_config(options={"prechat_form": True}))
    assert (await deliver(client, prechat(text))).status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["email"], row["phone"]) == ("maija@example.fi", "+358401234567")
    assert "maija@example.fi" not in row["message"]
    assert "040" not in row["message"]
    assert len(row["message"].splitlines()) == 2  # the name and message lines stay, as written


async def test_configured_labels_replace_the_defaults(make_client, db):
    options = {"prechat_form": True, "prechat_labels": {"email": ["Correo electrónico"]}}
    client = await make_client(tawk_config(options=options))
    text = "Correo electrónico : ana@example.co\nEmail : other@example.co\nPhone : 040 123 4567"
    assert (await deliver(client, prechat(text))).status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert row["email"] == "ana@example.co"
    assert row["phone"] == "+358401234567"  # phone keeps its default labels
    assert row["message"] == "Email : other@example.co"


async def test_the_visitor_objects_email_wins_over_a_pre_chat_line(make_client, db):
    client = await make_client(tawk_config(options={"prechat_form": True}))
    payload = prechat("Email : typed@example.fi\nHello", email="visitor@example.fi")
    assert (await deliver(client, payload)).status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["email"], row["message"]) == ("visitor@example.fi", "Hello")


def test_a_message_without_labelled_lines_is_left_as_it_is():
    source = tawk_config(options={"prechat_form": True}).sources["tawk"]
    [item] = ADAPTER.parse(source, inbound(CHAT_START_LIVE, signed(CHAT_START_LIVE)))
    assert isinstance(item, RawSubmission)
    assert item.fields == {"name": "Ana Gómez", "message": "Nombre de La Empresa : Ana Gómez"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prechat_form": "yes"}, r"options\.prechat_form: expected true or false"),
        ({"prechat_labels": ["Email"]}, r"options\.prechat_labels: expected a table"),
        ({"prechat_labels": {"name": ["Nimi"]}}, r"options\.prechat_labels\.name: only email and phone"),
        ({"prechat_labels": {"email": []}}, r"options\.prechat_labels\.email: expected a list of labels"),
        (
            {"prechat_labels": {"email": "Email"}},
            r"options\.prechat_labels\.email: expected a list of labels",
        ),
    ],
)
def test_pre_chat_options_that_cannot_work_are_refused_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        tawk_config(options=options)
