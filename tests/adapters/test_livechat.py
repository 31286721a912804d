"""LiveChat (text.com) webhooks v3.6: incoming_chat and incoming_event, authenticated by the body's secret_key.

Payloads: tests/fixtures/livechat-incoming_chat.reconstructed.json (assembled from the samples of
LiveChat's "Webhooks" v3.6, https://platform.text.com/docs/management/webhooks/ , and "Data
structures", https://platform.text.com/docs/messaging/agent-chat-api/data-structures), the page's
skeleton as printed (livechat-incoming_chat.docs-skeleton.jsonc) and tests/fixtures/livechat/
(the incoming_event envelope of the same page around the docs' Message, Filled form and System
message samples; see its README).
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.livechat import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature
from tests.support import config_with_source, dump_database

SECRET = "livechat-webhook-secret-0123456789"
URL = "/v1/chats/livechat"
SHARED = Path(__file__).parents[1] / "fixtures"
FIXTURES = SHARED / "livechat"
INCOMING_CHAT = json.loads((SHARED / "livechat-incoming_chat.reconstructed.json").read_text())
EVENT_MESSAGE = json.loads((FIXTURES / "incoming_event-message.json").read_text())
EVENT_FORM = json.loads((FIXTURES / "incoming_event-filled_form.json").read_text())
EVENT_SYSTEM = json.loads((FIXTURES / "incoming_event-system_message.json").read_text())
CUSTOMER_ID = "b7eff798-f8df-4364-8059-649c35c9ed0c"
JSON = {"Content-Type": "application/json"}
CONTACT_ROW = (
    "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel "
    "FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
)


def livechat_config(secrets=(SECRET,), **source):
    names = [f"LIVECHAT_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "livechat",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="chat",
        format="livechat",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def body_of(payload: dict, secret: object = SECRET) -> bytes:
    payload = copy.deepcopy(payload)
    payload["secret_key"] = secret
    return json.dumps(payload).encode()


def incoming_chat(*, chat_id: str = "PJ0MRSHTDG", thread_id: str = "K600PKZON8", **changes) -> dict:
    """The reconstructed incoming_chat; changes go to the customer user (None removes a key)."""
    payload = copy.deepcopy(INCOMING_CHAT)
    chat = payload["payload"]["chat"]
    chat["id"], chat["thread"]["id"] = chat_id, thread_id
    customer = chat["users"][0]
    for key, value in changes.items():
        if value is None:
            customer.pop(key, None)
        else:
            customer[key] = value
    return payload


def without_form(payload: dict) -> dict:
    events = payload["payload"]["chat"]["thread"]["events"]
    events[:] = [e for e in events if e["type"] != "filled_form"]
    return payload


def anonymous_chat(**kwargs) -> dict:
    """A chat whose customer gave neither e-mail nor phone (no pre-chat form either)."""
    return without_form(incoming_chat(email=None, phone_number=None, **kwargs))


def event(template: dict, chat_id: str = "PJ0MRSHTDG", **changes) -> dict:
    payload = copy.deepcopy(template)
    payload["payload"]["chat_id"] = chat_id
    payload["payload"]["event"].update(changes)
    return payload


def request(body: bytes) -> InboundRequest:
    return InboundRequest(
        headers={}, query={}, body=body, content_type="application/json", received_at=datetime.now(UTC)
    )


async def post(client, payload: dict, secret: object = SECRET):
    return await client.post(URL, data=body_of(payload, secret), headers=JSON)


async def test_the_documented_incoming_chat_stores_the_customer_and_their_first_message(make_client, db):
    client = await make_client(livechat_config())
    response = await post(client, INCOMING_CHAT)
    assert response.status == 200
    assert (await response.json())["status"] == "created"
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": "Thomas Anderson",
        "email": "t.anderson@example.com",
        "phone": "+18008529001",  # the Customer structure's phone_number
        "message": "hello there",
        "source": "livechat",
        "channel": "chat",
    }
    stored = await dump_database(db)
    for dropped in (
        "Wroclaw",  # geolocation
        "Mozilla/5.0",  # user agent
        "https://www.livechat.com/tour",  # pages visited
        "custom_value",  # session fields
        "1600 Pennsylvania",  # address
        "Agent Smith",
        "smith@example.com",
        "Support",  # radio answer of the pre-chat form
        "automotive",
        "Marketing",
        "790034890",  # postback value
        "shopify",
    ):
        assert dropped not in stored


async def test_an_incoming_chat_delivered_again_is_a_duplicate_of_the_first(make_client, db):
    client = await make_client(livechat_config())
    first = await (await post(client, INCOMING_CHAT)).json()
    again = await post(client, INCOMING_CHAT)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


@pytest.mark.parametrize(
    "secret",
    ["wrong-secret", "", None, 12345, ["livechat-webhook-secret-0123456789"], SECRET.upper(), SECRET + " "],
    ids=["wrong", "empty", "null", "number", "list", "case", "trailing-space"],
)
async def test_a_wrong_or_malformed_secret_key_gets_401_and_stores_nothing(make_client, db, secret):
    client = await make_client(livechat_config())
    response = await post(client, INCOMING_CHAT, secret=secret)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_body_without_secret_key_gets_401(make_client):
    client = await make_client(livechat_config())
    payload = copy.deepcopy(INCOMING_CHAT)
    del payload["secret_key"]
    response = await client.post(URL, data=json.dumps(payload).encode(), headers=JSON)
    assert response.status == 401


async def test_the_old_and_the_new_secret_both_verify_during_rotation(make_client, db):
    client = await make_client(livechat_config(secrets=("old-livechat-secret", SECRET)))
    assert (await post(client, INCOMING_CHAT, secret="old-livechat-secret")).status == 200
    assert (await post(client, incoming_chat(chat_id="PJ0MRSHTDH"), secret=SECRET)).status == 200


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"secret_key": "a", "secret_key": "b"}', b"\xff\xfe{}"],
    ids=["broken", "array", "duplicate-keys", "not-utf8"],
)
async def test_an_unparseable_body_gets_400(make_client, body):
    client = await make_client(livechat_config())
    response = await client.post(URL, data=body, headers=JSON)
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


async def test_another_action_is_acknowledged_and_ignored(make_client, db):
    client = await make_client(livechat_config())
    payload = {
        "webhook_id": "<webhook_id>",
        "action": "chat_deactivated",
        "organization_id": "390e44e6-f1e6-0368c-z6ddb-74g14508c2ex",
        "payload": {"chat_id": "PJ0MRSHTDG", "thread_id": "K600PKZON8", "user_id": CUSTOMER_ID},
    }
    response = await post(client, payload)
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event"}


async def test_the_docs_skeleton_with_no_users_is_ignored_for_want_of_a_customer(make_client, db):
    client = await make_client(livechat_config())
    text = (SHARED / "livechat-incoming_chat.docs-skeleton.jsonc").read_text()
    payload = json.loads(re.sub(r"//[^\n]*", "", text))
    response = await post(client, payload)
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "no_customer"}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


async def test_a_chat_without_contact_details_waits_and_leaves_no_trace_in_the_crm(make_client, db):
    client = await make_client(livechat_config())
    response = await post(client, anonymous_chat())
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": "awaiting_contact_details"}
    response = await post(client, event(EVENT_MESSAGE, id="K600PKZON8_5", text="Are you there?"))
    assert response.status == 200
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 0
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 0


async def test_a_later_pre_chat_form_with_an_email_commits_the_chat_with_its_first_message(make_client, db):
    client = await make_client(livechat_config())
    assert (await post(client, anonymous_chat(name=None))).status == 200
    later = event(EVENT_MESSAGE, id="K600PKZON8_5", text="A second message")
    assert (await post(client, later)).status == 200
    response = await post(client, EVENT_FORM)  # the docs' Filled form: name + e-mail
    assert response.status == 200
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == (
        "Thomas Anderson",
        "t.anderson@example.com",
        "hello there",  # the first words, from incoming_chat
    )
    assert await db.fetchval("SELECT fields::text FROM ingest.pending_chats") == "{}"


async def test_a_message_after_the_submission_does_not_replace_the_first_one(make_client, db):
    client = await make_client(livechat_config())
    created = await (await post(client, INCOMING_CHAT)).json()
    response = await post(client, event(EVENT_MESSAGE, id="K600PKZON8_7", text="Something else"))
    assert response.status == 200
    assert await response.json() == {"status": "updated", "submission_id": created["submission_id"]}
    assert await db.fetchval("SELECT message FROM crm.submissions") == "hello there"
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


async def test_an_agents_first_message_in_the_thread_is_not_the_visitors_message(make_client, db):
    client = await make_client(livechat_config())
    payload = incoming_chat()
    events = payload["payload"]["chat"]["thread"]["events"]
    greeting = dict(events[1], id="K600PKZON8_1", author_id="smith@example.com", text="Hi, Agent Smith here")
    note = dict(events[1], id="K600PKZON8_2", text="internal note", visibility="agents")
    events[:] = [greeting, note, events[0], dict(events[1], id="K600PKZON8_3")]
    assert (await post(client, payload)).status == 200
    assert await db.fetchval("SELECT message FROM crm.submissions") == "hello there"
    stored = await dump_database(db)
    assert "Agent Smith here" not in stored
    assert "internal note" not in stored


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"author_id": "smith@example.com", "text": "Agent words"}, "not_from_the_customer"),
        ({"author_id": "5c9871d5372c824cbf22d860a707a578", "text": "Bot words"}, "not_from_the_customer"),
        ({"author_id": None}, "not_from_the_customer"),
        ({"visibility": "agents"}, "not_from_the_customer"),
        ({"text": "   "}, "no_text"),
        ({"text": ["hello"]}, "no_text"),
        ({"type": "file"}, "unsupported_event_type"),
    ],
    ids=["agent", "bot", "no-author", "agents-only", "blank", "list", "file"],
)
async def test_events_that_are_not_the_customers_words_are_ignored(make_client, db, changes, reason):
    client = await make_client(livechat_config())
    response = await post(client, event(EVENT_MESSAGE, **changes))
    assert response.status == 200
    assert await response.json() == {"status": "ignored", "reason": reason}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


async def test_a_system_message_is_ignored(make_client, db):
    client = await make_client(livechat_config())
    response = await post(client, EVENT_SYSTEM)
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event_type"}


async def test_an_agents_message_in_between_never_becomes_the_message(make_client, db):
    client = await make_client(livechat_config())
    payload = anonymous_chat(chat_id="CHAT2")
    payload["payload"]["chat"]["thread"]["events"] = []  # the customer has not written yet
    assert (await post(client, payload)).status == 200
    agent = event(EVENT_MESSAGE, chat_id="CHAT2", id="A1", author_id="smith@example.com", text="Hello?")
    assert (await post(client, agent)).status == 200
    mine = event(EVENT_MESSAGE, chat_id="CHAT2", id="C1", text="I want a quote")
    assert (await post(client, mine)).status == 200
    form = event(EVENT_FORM, chat_id="CHAT2", id="F1")
    assert (await post(client, form)).status == 200
    assert await db.fetchval("SELECT message FROM crm.submissions") == "I want a quote"


async def test_a_redelivered_event_that_committed_the_chat_is_a_duplicate(make_client, db):
    client = await make_client(livechat_config())
    await post(client, anonymous_chat())
    first = await (await post(client, EVENT_FORM)).json()
    again = await post(client, EVENT_FORM)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}


async def test_a_placeholder_customer_name_is_not_stored(make_client, db):
    client = await make_client(livechat_config())
    payload = without_form(incoming_chat(name="Customer"))
    assert (await post(client, payload)).status == 200
    assert await db.fetchval("SELECT name FROM crm.contacts") is None


async def test_a_phone_asked_in_the_pre_chat_form_is_read_by_its_label(make_client, db):
    client = await make_client(livechat_config())
    payload = incoming_chat(email=None, phone_number=None)
    form = payload["payload"]["chat"]["thread"]["events"][0]
    form["fields"] = [
        {"type": "name", "id": "1", "label": "Your name", "answer": "Maija Meikäläinen"},
        {"type": "question", "id": "2", "label": "Phone number", "answer": "040 123 4567"},
        {"type": "textarea", "id": "3", "label": "Your message", "answer": "Not the chat message"},
    ]
    assert (await post(client, payload)).status == 200
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["phone"], row["message"]) == (
        "Maija Meikäläinen",
        None,
        "+358401234567",
        "hello there",
    )
    assert "Not the chat message" not in await dump_database(db)


async def test_a_configured_pre_chat_consent_checkbox_is_recorded(make_client, db):
    config = livechat_config(consent_fields={"Yes, send me news": "marketing-email-v1"})
    client = await make_client(config)
    payload = incoming_chat()
    payload["payload"]["chat"]["thread"]["events"][0]["fields"].append(
        {
            "type": "checkbox",
            "id": "9",
            "label": "Newsletter",
            "answers": [{"id": "0", "label": "Yes, send me news"}],
        }
    )
    assert (await post(client, payload)).status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


@pytest.mark.parametrize(("ticked", "granted"), [(True, True), (False, False)])
async def test_a_newsletter_checkbox_for_email_answers_as_a_boolean(make_client, db, ticked, granted):
    # LiveChat's "checkbox_for_email" pre-chat field answers true/false (lc-sdk-go webhooks/structures.go).
    client = await make_client(
        livechat_config(consent_fields={"Subscribe to newsletter": "marketing-email-v1"})
    )
    payload = incoming_chat()
    payload["payload"]["chat"]["thread"]["events"][0]["fields"].append(
        {"type": "checkbox_for_email", "id": "9", "label": "Subscribe to newsletter", "answer": ticked}
    )
    assert (await post(client, payload)).status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is granted
    assert (
        await db.fetchval("SELECT granted FROM crm.consents WHERE consent_id = 'marketing-email-v1'")
        is granted
    )


async def test_a_message_for_agents_only_in_the_older_recipients_field_is_not_the_first_message(
    make_client, db
):
    client = await make_client(livechat_config())
    payload = incoming_chat()
    events = payload["payload"]["chat"]["thread"]["events"]
    first = next(e for e in events if e["type"] == "message")
    first.pop("visibility", None)
    first["recipients"] = "agents"
    first["text"] = "agents-only-note"
    assert (await post(client, payload)).status == 200
    assert "agents-only-note" not in await dump_database(db)


async def test_an_unticked_pre_chat_consent_is_recorded_as_not_granted(make_client, db):
    client = await make_client(livechat_config(consent_fields={"Yes, send me news": "marketing-email-v1"}))
    assert (await post(client, INCOMING_CHAT)).status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    assert await db.fetchval("SELECT count(*) FROM crm.consents WHERE NOT granted") == 1


async def test_an_organization_id_restriction_refuses_other_organizations(make_client, db):
    client = await make_client(livechat_config(options={"organization_id": "another-organization"}))
    assert (await post(client, INCOMING_CHAT)).status == 401
    client = await make_client(
        livechat_config(options={"organization_id": "390e44e6-f1e6-0368c-z6ddb-74g14508c2ex"})
    )
    assert (await post(client, INCOMING_CHAT)).status == 200


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p["payload"]["chat"].update(users="not a list"),
        lambda p: p["payload"]["chat"].update(users=[None, 3, "x", {"type": "customer"}]),
        lambda p: p["payload"]["chat"]["users"][0].update(name=["Thomas"], email=42, phone_number={"n": 1}),
        lambda p: p["payload"]["chat"]["users"][0].update(email="<b>not an address</b>"),
        lambda p: p["payload"]["chat"].update(thread=None),
        lambda p: p["payload"]["chat"]["thread"].update(events=[None, "x", 5, {"type": "message"}]),
        lambda p: p["payload"]["chat"]["thread"]["events"][0].update(fields="nope"),
        lambda p: p["payload"]["chat"]["thread"]["events"][0].update(
            fields=[
                None,
                {"type": "email"},
                {"id": 7, "label": None, "answer": {"label": 3}},
                {"label": "x", "answers": "y"},
            ]
        ),
        lambda p: p["payload"]["chat"]["thread"]["events"][1].update(text=12345),
        lambda p: p["payload"]["chat"]["thread"].update(id=None),
        lambda p: p["payload"]["chat"]["users"][0].update(name="x" * 10_000),
    ],
    ids=[
        "users-string",
        "odd-users",
        "odd-profile-types",
        "html-email",
        "no-thread",
        "odd-events",
        "fields-string",
        "odd-fields",
        "numeric-text",
        "no-thread-id",
        "huge-name",
    ],
)
async def test_surprising_types_never_cause_a_server_error(make_client, db, mangle):
    client = await make_client(livechat_config())
    payload = incoming_chat()
    mangle(payload)
    response = await post(client, payload)
    assert response.status in (200, 201, 202)


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "incoming_chat", "payload": None},
        {"action": "incoming_chat", "payload": {"chat": {"id": ["x"]}}},
        {"action": "incoming_event", "payload": {"chat_id": "PJ0MRSHTDG", "event": "x"}},
        {"action": "incoming_event", "payload": {"event": {"id": "e1", "type": "message"}}},
    ],
    ids=["no-payload", "chat-id-list", "event-string", "no-chat-id"],
)
async def test_an_authenticated_payload_without_its_ids_gets_400(make_client, payload):
    client = await make_client(livechat_config())
    response = await post(client, payload)
    assert response.status == 400


def test_incoming_chat_pieces_are_keyed_by_the_chat_with_a_per_thread_delivery_id():
    source = livechat_config().sources["livechat"]
    (item,) = ADAPTER.parse(source, request(body_of(INCOMING_CHAT)))
    assert isinstance(item, RawSubmission)
    assert item.session_key == "PJ0MRSHTDG"
    assert item.delivery_id == "incoming_chat:PJ0MRSHTDG:K600PKZON8"
    assert item.optional_contact is True
    assert set(item.fields) <= {"name", "email", "phone", "message"}
    (later,) = ADAPTER.parse(source, request(body_of(EVENT_MESSAGE)))
    assert isinstance(later, RawSubmission)
    assert later.delivery_id == "incoming_event:0affb00a-82d6-4e07-ae61-56ba5c36f743"
    assert later.fields == {"message": "hello there"}


def test_a_wrong_secret_raises_invalid_signature_before_anything_is_read():
    source = livechat_config().sources["livechat"]
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, request(body_of({"action": "incoming_chat"}, secret="nope")))


@pytest.mark.parametrize(
    "options",
    [{"organization_id": 5}, {"organization_id": " "}, {"unknown": "x"}],
    ids=["number", "blank", "unknown"],
)
def test_bad_options_are_refused_at_start_up(options):
    with pytest.raises(ConfigError, match=r"sources\.livechat\.options"):
        livechat_config(options=options)


async def test_a_secret_key_with_a_lone_surrogate_escape_is_a_failed_authentication(make_client, db):
    client = await make_client(livechat_config())
    response = await client.post(
        URL,
        data=b'{"secret_key": "\\ud800", "action": "incoming_chat"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 401
