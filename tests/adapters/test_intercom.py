"""Intercom webhooks: conversation.user.created and ping, signed with X-Hub-Signature (sha1=, hex HMAC-SHA1).

Payloads: tests/fixtures/intercom/. user_created-signed.json is the body of Intercom's "Signed
Notifications" (https://developers.intercom.com/intercom-api-reference/v1.0/reference/signed-notifications),
verbatim. The conversation.user.created bodies put that page's notification envelope around the
Conversation object of Intercom's REST API reference 2.3 ("Redact a conversation part",
https://developers.intercom.com/docs/references/2.3/rest-api/conversations/): the
anonymous-lead one as printed, the other with the author's name and e-mail of the "Conversation source"
model (https://developers.intercom.com/docs/references/2.16/rest-api/api.intercom.io/models/conversation_source).
Intercom publishes no signature test vector; the one here (ping-compact.json) is self-computed.
conversation_user_created-api1.json is an API 1.x delivery (person in data.item.user), verbatim from
zulip's Intercom fixtures; see tests/fixtures/intercom/README.md.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.base import Ignored
from ingest.adapters.intercom import ADAPTER, plain_text
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature
from tests.adapters._metrics import metric_value
from tests.support import config_with_source, dump_database

SECRET = "intercom-client-secret-0123456789"
URL = "/v1/chats/intercom"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "intercom"
CONVERSATION = json.loads((FIXTURES / "conversation_user_created.json").read_text())
ANONYMOUS = (FIXTURES / "conversation_user_created-anonymous_lead.json").read_bytes()
USER_CREATED = (FIXTURES / "user_created-signed.json").read_bytes()
PING = (FIXTURES / "ping-compact.json").read_bytes()
API1 = json.loads((FIXTURES / "conversation_user_created-api1.json").read_text())
# Self-computed (Python hmac and openssl): HMAC-SHA1("test_secret", ping-compact.json).
VECTOR_SECRET = "test_secret"
VECTOR_SIGNATURE = "sha1=c1c2b759edba200b8ca35e9f8624cbe2db2c0181"
CONVERSATION_BODY = json.dumps(CONVERSATION).encode()
UNKEYED = hashlib.sha1(CONVERSATION_BODY).hexdigest()  # noqa: S324 - a plain digest, not an HMAC: must fail
CONTACT_ROW = (
    "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel "
    "FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
)


def intercom_config(secrets=(SECRET,), **source):
    names = [f"INTERCOM_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "intercom",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="chat",
        format="intercom",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature": f"sha1={digest}"}


async def deliver(client, payload: dict | bytes, secret: str = SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await client.post(URL, data=body, headers=signed(body, secret))


def conversation(notification_id: str | None = None, topic: str | None = None, **source) -> dict:
    """The conversation.user.created fixture; keyword arguments replace keys of data.item.source."""
    payload = copy.deepcopy(CONVERSATION)
    if notification_id is not None:
        payload["id"] = notification_id
    if topic is not None:
        payload["topic"] = topic
    payload["data"]["item"]["source"].update(source)
    return payload


def inbound(body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type="application/json",
        received_at=datetime.now(UTC),
    )


# --- the documented shapes end to end ------------------------------------------------------------


async def test_a_conversation_a_user_started_stores_the_author_and_the_opening_message_as_text(
    make_client, db
):
    client = await make_client(intercom_config())
    response = await deliver(client, CONVERSATION)
    assert response.status == 201
    assert (await response.json())["status"] == "created"
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": "Jane Doe",
        "email": "jane.doe@example.com",
        "phone": None,
        "message": "Hi, do you ship to Finland?\n\nWe need 20 licences & an invoice.",
        "source": "intercom",
        "channel": "chat",
    }
    stored = await dump_database(db)
    for dropped in (
        "Mark Strong",  # the teammate: an admin, not the person who wrote in
        "mk@acmeinc.org",
        "intercom-survey-app",
        "1911149812",
        "5bc8f7421ae2d96695c18b",
        "a86dr8yl",
        "Billing",
        "<p>",
    ):
        assert dropped not in stored


async def test_the_documented_anonymous_lead_has_no_contact_details_and_leaves_no_trace(make_client, db):
    client = await make_client(intercom_config())
    response = await deliver(client, ANONYMOUS)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert "5bc8f7421ae2d96695c18a" not in await dump_database(db)


async def test_the_documented_signed_user_created_notification_is_acknowledged_and_ignored(make_client, db):
    client = await make_client(intercom_config())
    response = await deliver(client, USER_CREATED)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event"}
    assert "Hoban Washburne" not in await dump_database(db)


async def test_a_plain_text_body_of_api_2_15_is_kept_as_written(make_client, db):
    client = await make_client(intercom_config())
    assert (await deliver(client, conversation(body="Is 2 < 3 & AT&T ok?\nThanks"))).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "Is 2 < 3 & AT&T ok?\nThanks"


async def test_an_email_conversations_subject_comes_before_its_body(make_client, db):
    client = await make_client(intercom_config())
    payload = conversation(type="email", subject="Quote request", body="<p>Please send a quote.</p>")
    assert (await deliver(client, payload)).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "Quote request\n\nPlease send a quote."


async def test_a_lead_with_only_an_email_is_enough(make_client, db):
    client = await make_client(intercom_config())
    payload = conversation(author={"type": "lead", "id": "x", "name": None, "email": "lead@example.com"})
    assert (await deliver(client, payload)).status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"]) == (None, "lead@example.com")


# --- the signature ------------------------------------------------------------------------------


def test_the_self_computed_vector_verifies_and_a_ping_is_ignored():
    source = intercom_config(secrets=(VECTOR_SECRET,)).sources["intercom"]
    (item,) = ADAPTER.parse(source, inbound(PING, {"X-Hub-Signature": VECTOR_SIGNATURE}))
    assert item == Ignored("ping", "notif_78c122d0-23ba-11e4-9464-79b01267cc2e")


async def test_a_ping_through_http_gets_a_2xx_and_stores_nothing(make_client, db):
    client = await make_client(intercom_config(secrets=(VECTOR_SECRET,)))
    headers = {"Content-Type": "application/json", "X-Hub-Signature": VECTOR_SIGNATURE}
    response = await client.post(URL, data=PING, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "ping"}
    assert await db.fetchval("SELECT count(*) FROM ingest.deliveries") == 0


def test_the_documented_example_header_does_not_verify_with_some_other_secret():
    # "Signed Notifications" prints sha1=21ff2e14... for this body but not the secret behind it.
    source = intercom_config().sources["intercom"]
    header = {"X-Hub-Signature": "sha1=21ff2e149e0fdcac6f947740f6177f6434bda921"}
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, inbound(USER_CREATED, header))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"X-Hub-Signature": "sha1=" + "0" * 40},
        lambda h: h | {"X-Hub-Signature": h["X-Hub-Signature"].removeprefix("sha1=")},
        lambda h: h | {"X-Hub-Signature": h["X-Hub-Signature"].replace("sha1=", "sha256=")},
        lambda h: h | {"X-Hub-Signature": h["X-Hub-Signature"][:-1]},
        lambda h: h | {"X-Hub-Signature": "sha1=" + "zz" * 20},
        lambda h: h | {"X-Hub-Signature": "sha1="},
        lambda h: h | {"X-Hub-Signature": h["X-Hub-Signature"] + ",sha1=" + "0" * 40},
        lambda h: {k: v for k, v in h.items() if k != "X-Hub-Signature"},
        lambda h: h | {"X-Hub-Signature": "sha1=" + UNKEYED},
    ],
    ids=["wrong", "no-prefix", "sha256", "short", "not-hex", "prefix-only", "two", "missing", "unkeyed"],
)
async def test_a_bad_signature_gets_401_and_stores_nothing(make_client, db, mangle):
    client = await make_client(intercom_config())
    body = CONVERSATION_BODY
    response = await client.post(URL, data=body, headers=mangle(signed(body)))
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_body_signed_with_another_secret_gets_401(make_client, db):
    client = await make_client(intercom_config())
    assert (await deliver(client, CONVERSATION, secret="another-apps-secret")).status == 401


async def test_a_body_changed_after_signing_gets_401(make_client, db):
    client = await make_client(intercom_config())
    body = json.dumps(CONVERSATION).encode()
    tampered = body.replace(b"jane.doe@example.com", b"mallory@example.com")
    assert (await client.post(URL, data=tampered, headers=signed(body))).status == 401


async def test_an_uppercase_hex_digest_verifies(make_client, db):
    client = await make_client(intercom_config())
    body = json.dumps(CONVERSATION).encode()
    headers = signed(body)
    headers["X-Hub-Signature"] = "sha1=" + headers["X-Hub-Signature"].removeprefix("sha1=").upper()
    assert (await client.post(URL, data=body, headers=headers)).status == 201


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client, db):
    client = await make_client(intercom_config(secrets=("old-client-secret", SECRET)))
    assert (await deliver(client, conversation("notif_a"), secret="old-client-secret")).status == 201
    assert (await deliver(client, conversation("notif_b"), secret=SECRET)).status == 201


# --- idempotency and notifications we do not keep ----------------------------------------------------


async def test_a_redelivered_notification_is_a_duplicate_of_the_first(make_client, db):
    client = await make_client(intercom_config())
    first = await (await deliver(client, CONVERSATION)).json()
    again = await deliver(client, CONVERSATION)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (conversation(topic="conversation.admin.replied"), "unsupported_event"),
        (conversation(topic="conversation.user.replied"), "unsupported_event"),
        (conversation(topic="contact.lead.created"), "unsupported_event"),
        (conversation(topic=["conversation.user.created"]), "unsupported_event"),
        ({"type": "notification_event"}, "unsupported_event"),
        (
            conversation(
                author={"type": "admin", "id": "814860", "name": "Mark Strong", "email": "mk@acmeinc.org"}
            ),
            "not_from_the_contact",
        ),
        (conversation(author={"type": "bot", "id": "815309"}), "not_from_the_contact"),
        (conversation(author=None), "not_from_the_contact"),
    ],
    ids=[
        "admin-replied",
        "user-replied",
        "lead-created",
        "topic-list",
        "no-topic",
        "admin",
        "bot",
        "no-author",
    ],
)
async def test_notifications_other_than_a_contacts_new_conversation_are_acknowledged_and_ignored(
    make_client, db, payload, reason
):
    client = await make_client(intercom_config())
    response = await deliver(client, payload)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": reason}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert "mk@acmeinc.org" not in await dump_database(db)


# --- API 1.x (issue 16.3) ----------------------------------------------------------------------


def api1(**user) -> dict:
    """The API 1.x fixture; keyword arguments replace keys of data.item.user."""
    payload = copy.deepcopy(API1)
    payload["data"]["item"]["user"].update(user)
    return payload


async def test_an_api_1_conversation_is_read_from_its_user_and_conversation_message(make_client, db):
    # Before: answered 202 not_from_the_contact and discarded; Intercom never retries.
    client = await make_client(intercom_config())
    response = await deliver(client, api1(email="rose.poodle@example.com"))
    assert response.status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": "Rose Poodle from St. John's",
        "email": "rose.poodle@example.com",
        "phone": None,
        "message": "Hello everyone!",
        "source": "intercom",
        "channel": "chat",
    }


async def test_the_verbatim_api_1_lead_without_an_email_is_ignored_for_no_contact_details(make_client, db):
    client = await make_client(intercom_config())
    body = (FIXTURES / "conversation_user_created-api1.json").read_bytes()
    response = await client.post(URL, data=body, headers=signed(body))
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert "Rose Poodle" not in await dump_database(db)
    labels = {"source": "intercom", "reason": "no_contact_details"}
    assert await metric_value(client, "ingest_ignored_deliveries_total", **labels) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda p: p["data"]["item"]["conversation_message"]["author"].update(type="admin"),
            "not_from_the_contact",
        ),
        (lambda p: p["data"]["item"]["user"].update(type="admin"), "not_from_the_contact"),
        (lambda p: p["data"]["item"].pop("user"), "not_from_the_contact"),
        (lambda p: p["data"]["item"].pop("conversation_message"), "unsupported_payload_version"),
        (lambda p: p["data"].update(item={"type": "conversation", "id": "1"}), "unsupported_payload_version"),
    ],
    ids=["admin-author", "admin-user", "no-user", "no-message", "bare-item"],
)
async def test_an_item_in_neither_shape_or_not_from_the_contact_is_ignored_with_its_reason_and_counted(
    make_client, db, change, reason
):
    client = await make_client(intercom_config())
    payload = api1(email="rose.poodle@example.com")
    change(payload)
    response = await deliver(client, payload)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": reason}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert (
        await metric_value(client, "ingest_ignored_deliveries_total", source="intercom", reason=reason) == 1
    )


# --- HTML to text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hi</p>", "Hi"),
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("Line one<br>Line two<br/>Line three", "Line one\nLine two\nLine three"),
        ("<p>Fish &amp; chips &lt;3 &#8364;5&nbsp;each</p>", "Fish & chips <3 €5 each"),
        ('<p>See <a href="https://evil.example/x">our page</a> <b>now</b></p>', "See our page now"),
        ("<ul><li>a</li><li>b</li></ul>", "a\nb"),
        ("<p>Intro</p><ul><li>a</li></ul><div>end</div>", "Intro\n\na\n\nend"),
        ("a<br><br>b", "a\n\nb"),
        ("<p>Hello\n   world</p>", "Hello world"),
        ("<div>one</div>two", "one\ntwo"),
        ("<p>x</p><script>alert(1)</script><style>p{}</style>", "x"),
        ('<img src="https://example.com/a.png"><p>Caption</p>', "Caption"),
        ("<p>   </p><p></p>", ""),
        ("<![%x;]>Hello <b>there</b>", "Hello there"),
        ("<p>unclosed <b>tag", "unclosed tag"),
        ("<!-- a comment -->Text", "Text"),
        ("I <3 you", "I <3 you"),
        ("AT&T", "AT&T"),
        ("  plain text  ", "plain text"),
    ],
    ids=[
        "paragraph",
        "paragraphs",
        "breaks",
        "entities",
        "inline",
        "list",
        "blocks",
        "double-break",
        "source-newline",
        "div",
        "script",
        "image",
        "empty",
        "broken-declaration",
        "unclosed",
        "comment",
        "heart",
        "ampersand",
        "plain",
    ],
)
def test_html_bodies_are_reduced_to_plain_text(html, text):
    assert plain_text(html) == text


def test_a_conversation_whose_html_has_no_text_has_no_message():
    source = intercom_config().sources["intercom"]
    body = json.dumps(conversation(body="<p><br></p>")).encode()
    (item,) = ADAPTER.parse(source, inbound(body, signed(body)))
    assert isinstance(item, RawSubmission)
    assert item.fields == {"name": "Jane Doe", "email": "jane.doe@example.com"}
    assert item.delivery_id == "notif_b1e6a0c4-7d2f-4f0e-8a5b-2c9d3e4f5a66"
    assert item.optional_contact is True


# --- type surprises -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        conversation(body=None),
        conversation(body=["<p>Hi</p>"]),
        conversation(body={"html": "<p>Hi</p>"}),
        conversation(body="<p>" * 5000),
        conversation(body="<" * 20_000),
        conversation(subject=42),
        conversation(author={"type": "user", "name": ["Jane"], "email": {"a": 1}}),
        conversation(author={"type": "user", "name": 7, "email": "jane@example.com"}),
        conversation(author="user"),
        conversation("notif_" + "x" * 500),
        conversation(123),
        CONVERSATION | {"data": None},
        CONVERSATION | {"data": {"item": []}},
        CONVERSATION | {"data": {"item": {"source": "email"}}},
    ],
    ids=[
        "body-null",
        "body-list",
        "body-object",
        "many-tags",
        "many-brackets",
        "subject-number",
        "author-odd-types",
        "name-number",
        "author-string",
        "long-id",
        "numeric-id",
        "data-null",
        "item-list",
        "source-string",
    ],
)
async def test_surprising_types_never_cause_a_server_error(make_client, db, payload):
    client = await make_client(intercom_config())
    response = await deliver(client, payload)
    assert response.status in (200, 201, 202)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"topic": "a", "topic": "b"}', b"\xff\xfe{}", b"", b'{"x": NaN}'],
    ids=["broken", "array", "duplicate-keys", "not-utf8", "empty", "nan"],
)
async def test_an_unparseable_body_with_a_good_signature_gets_400(make_client, body):
    client = await make_client(intercom_config())
    response = await client.post(URL, data=body, headers=signed(body))
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


async def test_a_form_encoded_body_gets_415(make_client):
    client = await make_client(intercom_config())
    body = b"topic=ping"
    headers = signed(body) | {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post(URL, data=body, headers=headers)).status == 415


# --- configuration ------------------------------------------------------------------------------


def test_options_are_refused_at_start_up():
    with pytest.raises(ConfigError, match=r"sources\.intercom\.options\.hub_secret: unknown option"):
        intercom_config(options={"hub_secret": "x"})


def test_field_mappings_are_refused_because_intercom_has_no_form_fields():
    with pytest.raises(ConfigError, match=r"sources\.intercom\.fields"):
        intercom_config(consent_fields={"marketing": "marketing-email-v1"})


async def test_a_delivery_past_the_64_kib_default_is_taken_for_a_format_that_carries_whole_conversations(
    make_client, db
):
    # conversation.user.created carries the whole conversation (an inbound e-mail's HTML):
    # a 413 would never succeed on Intercom's retries.
    client = await make_client(intercom_config())
    payload = conversation()
    payload["data"]["item"]["custom_attributes"] = {"padding": "x" * 300_000}
    response = await deliver(client, payload)
    assert response.status == 201
    assert "x" * 1000 not in await dump_database(db)


async def test_a_source_can_set_its_own_body_limit(make_client, db):
    client = await make_client(intercom_config(max_body_bytes=1000))
    response = await deliver(client, conversation())
    assert response.status == 413
    assert await response.json() == {"error": "payload_too_large"}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_a_signed_notification_without_an_id_is_one_delivery_however_often_it_is_replayed(
    make_client, db
):
    # Without an id the delivery is identified by its signed bytes: a replay stores nothing again.
    client = await make_client(intercom_config())
    payload = {k: v for k, v in CONVERSATION.items() if k != "id"}
    first = await deliver(client, payload)
    assert first.status == 201
    again = await deliver(client, payload)
    assert again.status == 200
    assert (await again.json())["status"] == "duplicate"
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1
