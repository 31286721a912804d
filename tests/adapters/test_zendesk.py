"""Zendesk Sunshine Conversations webhooks v2: conversation:create and conversation:message, X-API-Key.

Payloads: tests/fixtures/zendesk_sunco-conversation_create.json and -conversation_message.json are the
webhook examples of the Sunshine Conversations OpenAPI spec (the Conversations API reference,
https://developer.zendesk.com/api-reference/conversations/), converted from YAML. tests/fixtures/zendesk/
holds the "Receiving Messages" example (https://docs.smooch.io/guide/receiving-messages/) and variants
of the spec's examples with the `includeFullUser` profile, a business author and a formResponse
(see its README). Nothing is signed: the webhook's secret comes back in X-API-Key.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.base import Ignored
from ingest.adapters.zendesk import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError
from tests.support import config_with_source, dump_database

SECRET = "sunco-webhook-secret-5f4eaef81e3dcc117c7ba48a"
URL = "/v1/chats/zendesk"
SHARED = Path(__file__).parents[1] / "fixtures"
FIXTURES = SHARED / "zendesk"
SPEC_CREATE = json.loads((SHARED / "zendesk_sunco-conversation_create.json").read_text())
SPEC_MESSAGE = json.loads((SHARED / "zendesk_sunco-conversation_message.json").read_text())
CREATE_FULL_USER = json.loads((FIXTURES / "conversation_create-full_user.json").read_text())
MESSAGE_FULL_USER = json.loads((FIXTURES / "conversation_message-full_user.json").read_text())
BUSINESS_MESSAGE = json.loads((FIXTURES / "conversation_message-business.json").read_text())
FORM_RESPONSE = json.loads((FIXTURES / "conversation_message-form_response.json").read_text())
WEB_USER = json.loads((FIXTURES / "receiving_messages-web_user.json").read_text())
JSON = {"Content-Type": "application/json"}
CONTACT_ROW = (
    "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel "
    "FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
)


def zendesk_config(secrets=(SECRET,), **source):
    names = [f"SUNCO_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "zendesk",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="chat",
        format="zendesk",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


async def deliver(client, payload: dict | bytes, key: str | None = SECRET, header: str = "X-API-Key"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = dict(JSON)
    if key is not None:
        headers[header] = key
    return await client.post(URL, data=body, headers=headers)


def event_of(payload: dict) -> dict:
    return copy.deepcopy(payload["events"][0])


def batch(*events: dict) -> dict:
    envelope = copy.deepcopy(SPEC_MESSAGE)
    envelope["events"] = list(events)
    return envelope


def with_message(template: dict, event_id: str | None = None, **message) -> dict:
    """A copy of a one-event delivery; keyword arguments replace keys of payload.message."""
    payload = copy.deepcopy(template)
    event = payload["events"][0]
    if event_id is not None:
        event["id"] = event_id
    event["payload"]["message"].update(message)
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


async def test_a_users_message_with_the_full_user_stores_the_profile_and_the_text(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, MESSAGE_FULL_USER)
    assert response.status == 201
    assert (await response.json())["status"] == "created"
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": "Jane Doe",  # the profile's givenName + surname beat the display name
        "email": "jane.doe@gmail.com",
        "phone": None,
        "message": "hello",
        "source": "zendesk",
        "channel": "chat",
    }
    stored = await dump_database(db)
    for dropped in (
        "Steve Rogers",
        "912382197",
        "avatar.jpg",
        "telegram",
        "5ec69c6e12dda33be985cb1a",
        "5f74c7d84a146f3abd72af1d",
        "zd:agentWorkspace",
        "5ebee0975ac5304b664a12fa",
    ):
        assert dropped not in stored


async def test_the_spec_message_without_an_email_waits_for_one_and_keeps_its_text(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, SPEC_MESSAGE)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "awaiting_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 0
    # The same user's next message, now with the full user: one submission with the first text.
    later = with_message(MESSAGE_FULL_USER, content={"type": "text", "text": "anyone there?"})
    assert (await deliver(client, later)).status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == ("Jane Doe", "jane.doe@gmail.com", "hello")


async def test_the_spec_conversation_create_without_a_profile_has_nothing_to_keep(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, SPEC_CREATE)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


async def test_a_prechat_capture_commits_the_user_and_later_messages_update_the_same_submission(
    make_client, db
):
    client = await make_client(zendesk_config())
    response = await deliver(client, CREATE_FULL_USER)
    assert response.status == 201
    created = await response.json()
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == ("Jane Doe", "jane.doe@gmail.com", None)
    response = await deliver(client, SPEC_MESSAGE)  # same conversation and user
    assert response.status == 200
    assert await response.json() == {"status": "updated", "submission_id": created["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


async def test_a_conversation_created_because_of_a_message_waits_for_that_message(make_client, db):
    client = await make_client(zendesk_config())
    payload = copy.deepcopy(CREATE_FULL_USER)
    payload["events"][0]["payload"]["creationReason"] = "message"
    response = await deliver(client, payload)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "message_follows"}
    assert (await deliver(client, MESSAGE_FULL_USER)).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "hello"


async def test_the_generated_web_user_name_is_never_a_name_and_an_email_identity_counts(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, WEB_USER)  # "Receiving Messages": Web User cbec0073faeda4dfcd21d0f1
    assert await response.json() == {"status": "ignored", "reason": "awaiting_contact_details"}
    user = {
        "id": "cbec0073faeda4dfcd21d0f1",
        "identities": [{"type": "email", "value": "web.user@example.com", "verification": "unverified"}],
    }
    later = with_message(
        WEB_USER,
        "0ca7d56ba7b2e081e479fe9f",
        content={"type": "image", "mediaUrl": "https://example.com/a.png"},
    )
    later["events"][0]["payload"]["message"]["author"]["user"] = user
    response = await deliver(client, later)
    assert response.status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == (None, "web.user@example.com", "Hello world")
    stored = await dump_database(db)
    assert "Web User" not in stored
    assert "example.com/a.png" not in stored


async def test_a_channel_display_name_is_the_name_when_there_is_no_profile(make_client, db):
    client = await make_client(zendesk_config())
    payload = copy.deepcopy(SPEC_MESSAGE)
    payload["events"][0]["payload"]["message"]["author"]["user"]["identities"] = [
        {"type": "email", "value": "steve@example.com"}
    ]
    assert (await deliver(client, payload)).status == 201
    assert await db.fetchval("SELECT name FROM crm.contacts") == "Steve Rogers"


async def test_a_prechat_form_response_gives_name_and_email_but_not_a_message(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, FORM_RESPONSE)
    assert response.status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == ("Sam Virtanen", "sam.virtanen@example.fi", None)
    stored = await dump_database(db)
    for dropped in ("Billing", "Where is my invoice?", "Web User", "Steve Rogers"):
        assert dropped not in stored


async def test_a_form_field_mapped_to_message_is_the_message_and_consent_fields_are_read(make_client, db):
    config = zendesk_config(
        fields={"message": "question"}, consent_fields={"Newsletter": "marketing-email-v1"}
    )
    client = await make_client(config)
    payload = copy.deepcopy(FORM_RESPONSE)
    payload["events"][0]["payload"]["message"]["content"]["fields"].append(
        {
            "type": "select",
            "name": "newsletter",
            "label": "Newsletter",
            "select": [{"name": "yes", "label": "Yes"}],
        }
    )
    assert (await deliver(client, payload)).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "Where is my invoice?"
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


async def test_a_business_message_is_acknowledged_and_never_read(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, BUSINESS_MESSAGE)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "business_message"}
    assert "How can we help" not in await dump_database(db)


# --- several events in one delivery ----------------------------------------------------------------


async def test_a_batch_is_answered_per_event_and_a_redelivered_batch_per_event_too(make_client, db):
    client = await make_client(zendesk_config())
    read = event_of(SPEC_MESSAGE) | {"id": "5f74a0d52b5315fc007e7990", "type": "conversation:read"}
    payload = batch(
        event_of(CREATE_FULL_USER),
        event_of(SPEC_MESSAGE),
        event_of(BUSINESS_MESSAGE),
        read,
    )
    response = await deliver(client, payload)
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "processed"
    created, updated, business, other = body["results"]
    assert created["status"] == "created"
    assert updated == {"status": "updated", "submission_id": created["submission_id"]}
    assert business == {"status": "ignored", "reason": "business_message"}
    assert other == {"status": "ignored", "reason": "unsupported_event"}
    again = await deliver(client, payload)
    assert again.status == 200
    results = (await again.json())["results"]
    assert results[0] == {"status": "duplicate", "submission_id": created["submission_id"]}
    # Every piece's delivery id is recorded: the redelivered message is a duplicate too.
    assert results[1] == {"status": "duplicate", "submission_id": created["submission_id"]}
    assert [r["status"] for r in results[2:]] == ["ignored", "ignored"]
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


def test_every_event_of_a_batch_is_one_item_with_its_own_delivery_id():
    source = zendesk_config().sources["zendesk"]
    body = json.dumps(batch(event_of(MESSAGE_FULL_USER), event_of(BUSINESS_MESSAGE), 7, None)).encode()
    items = ADAPTER.parse(source, inbound(body, {"X-API-Key": SECRET}))
    assert items == [
        RawSubmission(
            fields={
                "first_name": "Jane",
                "last_name": "Doe",
                "email": "jane.doe@gmail.com",
                "message": "hello",
            },
            delivery_id="5f74a0d52b5315fc007e798b",
            optional_contact=True,
            session_key="f52b01137aa6c250bc7251fa:26508c10541a4b0ff472e5e2",
        ),
        Ignored("business_message", "5f74a0d52b5315fc007e798c"),
        Ignored("unsupported_event"),
        Ignored("unsupported_event"),
    ]


async def test_a_redelivered_event_is_a_duplicate_of_the_first(make_client, db):
    client = await make_client(zendesk_config())
    first = await (await deliver(client, MESSAGE_FULL_USER)).json()
    again = await deliver(client, MESSAGE_FULL_USER)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}


async def test_an_empty_batch_is_acknowledged(make_client, db):
    client = await make_client(zendesk_config())
    response = await deliver(client, batch())
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_events"}


# --- the shared secret --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [None, "", "wrong", SECRET.upper(), SECRET[:-1], SECRET + "x", f"Bearer {SECRET}", " " + SECRET + "x"],
    ids=["missing", "empty", "wrong", "case", "short", "long", "bearer", "padded-wrong"],
)
async def test_a_delivery_without_the_right_api_key_gets_401_and_stores_nothing(make_client, db, key):
    client = await make_client(zendesk_config())
    response = await deliver(client, MESSAGE_FULL_USER, key=key)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


async def test_the_key_in_another_header_does_not_count_and_the_header_name_is_case_insensitive(
    make_client, db
):
    client = await make_client(zendesk_config())
    assert (await deliver(client, MESSAGE_FULL_USER, header="Authorization")).status == 401
    assert (await deliver(client, MESSAGE_FULL_USER, header="x-api-key")).status == 201


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client, db):
    client = await make_client(zendesk_config(secrets=("old-sunco-secret", SECRET)))
    assert (await deliver(client, CREATE_FULL_USER, key="old-sunco-secret")).status == 201
    assert (await deliver(client, MESSAGE_FULL_USER, key=SECRET)).status == 200


async def test_the_api_key_never_reaches_the_logs(make_client, log_output):
    client = await make_client(zendesk_config())
    assert (await deliver(client, MESSAGE_FULL_USER)).status == 201
    assert (await deliver(client, MESSAGE_FULL_USER, key="wrong-key-attempt")).status == 401
    logged = log_output.getvalue()
    for secret in (SECRET, "wrong-key-attempt", "jane.doe@gmail.com"):
        assert secret not in logged


# --- type surprises -----------------------------------------------------------------------------


def _odd(path: str, value: object) -> dict:
    payload = copy.deepcopy(MESSAGE_FULL_USER)
    target = payload["events"][0]
    *parents, last = path.split(".")
    for key in parents:
        target = target[key]
    target[last] = value
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        _odd(
            "payload.message.author.user.profile", {"givenName": ["Jane"], "surname": 7, "email": ["a@b.c"]}
        ),
        _odd("payload.message.author.user.profile", "jane.doe@gmail.com"),
        _odd("payload.message.author.user.profile.email", "<script>alert(1)</script>"),
        _odd("payload.message.author.user.profile.givenName", "J" * 500),
        _odd("payload.message.author.user", None),
        _odd("payload.message.author.user.identities", [None, 3, {"type": "email", "value": ["x"]}]),
        _odd("payload.message.author.user.identities", {"type": "email"}),
        _odd("payload.message.author.displayName", {"name": "x"}),
        _odd("payload.message.author.userId", ["26508c10541a4b0ff472e5e2"]),
        _odd("payload.message.author", "user"),
        _odd("payload.message.content", {"type": "text", "text": ["hello"]}),
        _odd("payload.message.content", {"type": "text", "text": "x" * 30_000}),
        _odd("payload.message.content", {"type": "formResponse", "fields": "name"}),
        _odd(
            "payload.message.content",
            {"type": "formResponse", "fields": [None, {"type": "email"}, {"name": 3}]},
        ),
        _odd(
            "payload.message.content",
            {"type": "formResponse", "fields": [{"type": "select", "name": "s", "select": "x"}]},
        ),
        _odd("payload.message.content", None),
        _odd("payload.message", []),
        _odd("payload.conversation", None),
        _odd("payload.conversation.id", "c" * 300),
        _odd("payload", "hello"),
        _odd("id", {"x": 1}),
        _odd("id", "e" * 500),
        _odd("type", None),
    ],
    ids=[
        "profile-odd-types",
        "profile-string",
        "email-html",
        "long-name",
        "user-null",
        "identities-odd",
        "identities-object",
        "display-name-object",
        "user-id-list",
        "author-string",
        "text-list",
        "huge-text",
        "form-fields-string",
        "form-fields-odd",
        "select-string",
        "content-null",
        "message-list",
        "conversation-null",
        "long-conversation-id",
        "payload-string",
        "id-object",
        "long-id",
        "type-null",
    ],
)
async def test_surprising_types_never_cause_a_server_error(make_client, db, payload):
    client = await make_client(zendesk_config())
    response = await deliver(client, payload)
    assert response.status in (200, 201, 202)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"events": [], "events": []}',
        b"\xff\xfe{}",
        b"",
        b'{"app": {"id": "x"}}',
        b'{"events": {"id": "x"}}',
        b'{"events": "none"}',
    ],
    ids=[
        "broken",
        "array",
        "duplicate-keys",
        "not-utf8",
        "empty",
        "no-events",
        "events-object",
        "events-string",
    ],
)
async def test_an_unparseable_body_with_the_right_key_gets_400(make_client, body):
    client = await make_client(zendesk_config())
    response = await deliver(client, body)
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


async def test_an_unparseable_body_without_the_key_gets_401(make_client):
    client = await make_client(zendesk_config())
    assert (await deliver(client, b"{not json", key="wrong")).status == 401


# --- configuration ------------------------------------------------------------------------------


def test_options_are_refused_at_start_up():
    with pytest.raises(ConfigError, match=r"sources\.zendesk\.options\.include_full_user: unknown option"):
        zendesk_config(options={"include_full_user": True})


def test_a_field_mapping_must_name_a_form_field():
    with pytest.raises(ConfigError, match=r"sources\.zendesk\.fields\.email"):
        zendesk_config(fields={"email": " "})


async def test_a_legacy_v1_webhook_delivery_is_acknowledged_not_refused_for_ever(make_client, db):
    # Sunshine Conversations v1 webhooks carry `trigger` and `messages`, no `events` array.
    client = await make_client(zendesk_config())
    legacy = {
        "trigger": "message:appUser",
        "app": {"_id": "5698edbf2a43bd081be982f1"},
        "messages": [{"type": "text", "text": "Hi", "role": "appUser", "name": "Steve"}],
        "appUser": {"_id": "c7f6e6d6c3a637261bd9656f", "email": "steve@example.com"},
        "version": "v1.1",
    }
    response = await deliver(client, legacy)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "unsupported_webhook_version"}
    assert "steve@example.com" not in await dump_database(db)


def test_an_api_key_header_of_undecodable_bytes_is_a_failed_authentication():
    from datetime import UTC, datetime

    from ingest.adapters.zendesk import ADAPTER
    from ingest.domain import InboundRequest
    from ingest.errors import InvalidSignature

    source = zendesk_config().sources["zendesk"]
    # aiohttp hands undecodable header bytes over as surrogate escapes.
    request = InboundRequest({"x-api-key": "\udcff"}, {}, b"{}", "application/json", datetime.now(UTC))
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, request)
