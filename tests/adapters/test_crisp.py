"""Crisp web hooks (V1): website hooks (secret ?key=) and plugin hooks (X-Crisp-Signature).

Payloads: tests/fixtures/crisp/. message_send.json is the `message:send` example of Crisp's
"Web Hooks Quickstart" (https://docs.crisp.chat/guides/web-hooks/quickstart), verbatim; the
session:set_* bodies are constructed from the envelope of "Web Hooks Reference (V1)"
(https://docs.crisp.chat/references/web-hooks/v1/) and the official Go library's event structs
(see the README). Crisp publishes no signature test vector; the one here is self-computed.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.crisp import ADAPTER
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature
from tests.support import config_with_source, dump_database

KEY = "crisp-website-hook-key-0123456789"
PLUGIN_SECRET = "test_secret"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "crisp"
MESSAGE_SEND = (FIXTURES / "message_send.json").read_bytes()  # as the docs print it
MESSAGE_SEND_COMPACT = (FIXTURES / "message_send-compact.json").read_bytes()
SET_NICKNAME = json.loads((FIXTURES / "session_set_nickname.json").read_text())
SET_EMAIL = json.loads((FIXTURES / "session_set_email.json").read_text())
SET_PHONE = json.loads((FIXTURES / "session_set_phone.json").read_text())
MESSAGE_RECEIVED = json.loads((FIXTURES / "message_received.json").read_text())
SESSION = "session_36ba3566-9651-4790-afc8-ffedbccc317f"
# Self-computed (Python hmac and openssl): HMAC-SHA256("test_secret", "[1506985696700;" + compact body + "]").
VECTOR_TIMESTAMP = "1506985696700"
VECTOR_SIGNATURE = "2f31f5ea0e9351bbd79b24c40daa3fbc873c948d15ba98b8e632e688b33b2e4c"
JSON = {"Content-Type": "application/json"}
CONTACT_ROW = (
    "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel "
    "FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
)


def crisp_config(hook: str | None = None, secrets=(KEY,), **options):
    names = [f"CRISP_SECRET_{i}" for i in range(len(secrets))]
    if hook is not None:
        options["hook"] = hook
    return config_with_source(
        "crisp",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="chat",
        format="crisp",
        purposes=["contact"],
        secret_env=names,
        options=options,
    )


def website_url(key: str | None = KEY, parameter: str = "key") -> str:
    return "/v1/chats/crisp" if key is None else f"/v1/chats/crisp?{parameter}={key}"


def message_send(**data) -> dict:
    payload = json.loads(MESSAGE_SEND)
    payload["data"].update(data)
    return payload


def with_data(template: dict, **data) -> dict:
    payload = copy.deepcopy(template)
    payload["data"].update(data)
    return payload


def plugin_headers(body: bytes, secret: str = PLUGIN_SECRET, timestamp: str | None = None) -> dict[str, str]:
    timestamp = timestamp or str(int(time.time() * 1000))
    message = b"[" + timestamp.encode() + b";" + body + b"]"
    return {
        "X-Crisp-Request-Timestamp": timestamp,
        "X-Crisp-Signature": hmac.new(secret.encode(), message, hashlib.sha256).hexdigest(),
        "X-Crisp-Hook-Origin": "plugin/rtm 38b411d9377a6a00 production",
        **JSON,
    }


def inbound(body: bytes, headers: dict[str, str], received_at: datetime) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        body=body,
        content_type="application/json",
        received_at=received_at,
    )


async def hook(client, payload: dict | bytes, key: str | None = KEY):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await client.post(website_url(key), data=body, headers=JSON)


# --- the piecewise flow through HTTP -------------------------------------------------------------


async def test_nickname_then_message_then_email_make_one_submission_with_the_first_message(make_client, db):
    client = await make_client(crisp_config())
    response = await hook(client, SET_NICKNAME)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "awaiting_contact_details"}
    assert (await hook(client, MESSAGE_SEND)).status == 202  # the Quickstart's "Hey :)"
    # The operator answers, both as the documented message:received and as a message:send from an operator.
    response = await hook(client, MESSAGE_RECEIVED)
    assert await response.json() == {"status": "ignored", "reason": "unsupported_event"}
    operator = message_send(
        **{"from": "operator", "content": "Operator here", "fingerprint": 2, "timestamp": 2}
    )
    response = await hook(client, operator | {"timestamp": 1506985697000})
    assert await response.json() == {"status": "ignored", "reason": "operator_message"}
    later = message_send(content="Second visitor message", fingerprint=3) | {"timestamp": 1506985699000}
    assert (await hook(client, later)).status == 202
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 0
    response = await hook(client, SET_EMAIL)
    assert response.status == 201
    created = await response.json()
    row = await db.fetchrow(CONTACT_ROW)
    assert dict(row) == {
        "name": "Jane Doe",  # set_nickname; the message's visitor493603 placeholder did not replace it
        "email": "jane@example.com",
        "phone": None,
        "message": "Hey :)",
        "source": "crisp",
        "channel": "chat",
    }
    response = await hook(client, SET_PHONE)
    assert response.status == 200
    assert await response.json() == {"status": "updated", "submission_id": created["submission_id"]}
    assert await db.fetchval("SELECT phone FROM crm.contacts") == "+33612345678"
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1
    stored = await dump_database(db)
    for dropped in ("visitor493603", "Operator here", "Hello! How can I help you?", "Support Agent"):
        assert dropped not in stored


async def test_a_chat_that_never_gets_contact_details_leaves_no_row_in_the_crm(make_client, db):
    client = await make_client(crisp_config())
    for payload in (SET_NICKNAME, json.loads(MESSAGE_SEND), MESSAGE_RECEIVED):
        assert (await hook(client, payload)).status == 202
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 0
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 0


async def test_the_documented_message_alone_waits_and_its_placeholder_nickname_is_never_a_name(
    make_client, db
):
    client = await make_client(crisp_config())
    assert (await hook(client, MESSAGE_SEND)).status == 202
    assert (await hook(client, SET_EMAIL)).status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["name"], row["email"], row["message"]) == (None, "jane@example.com", "Hey :)")
    assert "visitor493603" not in await dump_database(db)


async def test_a_phone_alone_is_enough_to_commit(make_client, db):
    client = await make_client(crisp_config())
    assert (await hook(client, MESSAGE_SEND)).status == 202
    assert (await hook(client, SET_PHONE)).status == 201
    assert await db.fetchval("SELECT phone FROM crm.contacts") == "+33612345678"


async def test_a_redelivered_set_email_is_a_duplicate_of_the_first(make_client, db):
    client = await make_client(crisp_config())
    first = await (await hook(client, SET_EMAIL)).json()
    again = await hook(client, SET_EMAIL)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            {"event": "session:request:initiated", "data": {"session_id": SESSION}, "timestamp": 1},
            "unsupported_event",
        ),
        ({"event": "people:sync:profile", "data": {}}, "unsupported_event"),
        ({"data": {"session_id": SESSION}}, "unsupported_event"),
        ({"event": ["message:send"], "data": {"session_id": SESSION}}, "unsupported_event"),
        (with_data(SET_NICKNAME, nickname="visitor12345"), "no_name"),
        (with_data(SET_NICKNAME, nickname=None), "no_name"),
        (with_data(SET_EMAIL, email=""), "nothing_set"),
        (with_data(SET_PHONE, phone=None), "nothing_set"),
    ],
    ids=[
        "request-initiated",
        "people",
        "no-event",
        "event-list",
        "placeholder",
        "null-nick",
        "empty",
        "null",
    ],
)
async def test_events_without_anything_to_keep_are_acknowledged_and_ignored(make_client, db, payload, reason):
    client = await make_client(crisp_config())
    response = await hook(client, payload)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": reason}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


@pytest.mark.parametrize(
    "data",
    [
        {
            "type": "file",
            "content": {"name": "x.png", "url": "https://example.com/x.png", "type": "image/png"},
        },
        {"type": "note", "content": {"text": "x"}},
        {"type": "text", "content": "   "},
        {"type": "text", "content": ["Hey"]},
        {"type": "text", "content": None},
    ],
    ids=["file", "note-object", "blank", "list", "null"],
)
async def test_a_visitor_message_without_text_is_ignored(make_client, db, data):
    client = await make_client(crisp_config())
    response = await hook(client, message_send(**data))
    assert await response.json() == {"status": "ignored", "reason": "not_a_text_message"}


# --- website hooks: the secret key parameter ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [None, "", "wrong", KEY.upper(), KEY[:-1], KEY + "x"],
    ids=["missing", "empty", "wrong", "case", "short", "long"],
)
async def test_a_website_hook_without_the_right_key_gets_401_and_stores_nothing(make_client, db, key):
    client = await make_client(crisp_config())
    response = await hook(client, SET_EMAIL, key=key)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_the_key_in_the_url_never_reaches_the_logs(make_client, log_output):
    client = await make_client(crisp_config())
    assert (await hook(client, SET_EMAIL)).status == 201
    assert (await hook(client, SET_EMAIL, key="wrong-key-attempt")).status == 401
    logged = log_output.getvalue()
    assert logged
    for secret in (KEY, "wrong-key-attempt", "jane@example.com"):
        assert secret not in logged


async def test_the_key_in_another_parameter_or_a_header_does_not_count(make_client):
    client = await make_client(crisp_config())
    body = json.dumps(SET_EMAIL).encode()
    response = await client.post(website_url(KEY, parameter="token"), data=body, headers=JSON)
    assert response.status == 401
    response = await client.post(website_url(None), data=body, headers=JSON | {"key": KEY})
    assert response.status == 401


async def test_a_renamed_key_parameter_is_read(make_client, db):
    client = await make_client(crisp_config(key_parameter="token"))
    body = json.dumps(SET_EMAIL).encode()
    assert (await client.post(website_url(KEY, parameter="key"), data=body, headers=JSON)).status == 401
    assert (await client.post(website_url(KEY, parameter="token"), data=body, headers=JSON)).status == 201


async def test_the_old_and_the_new_key_both_verify_during_rotation(make_client, db):
    client = await make_client(crisp_config(secrets=("old-crisp-key", KEY)))
    assert (await hook(client, SET_NICKNAME, key="old-crisp-key")).status == 202
    assert (await hook(client, SET_EMAIL, key=KEY)).status == 201


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"event": "a", "event": "b"}', b"\xff\xfe{}"],
    ids=["broken", "array", "duplicate-keys", "not-utf8"],
)
async def test_an_unparseable_website_hook_body_gets_400(make_client, body):
    client = await make_client(crisp_config())
    response = await hook(client, body)
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


# --- plugin hooks: X-Crisp-Signature --------------------------------------------------------------


def test_the_self_computed_vector_verifies_on_the_compact_body():
    source = crisp_config("plugin", secrets=(PLUGIN_SECRET,)).sources["crisp"]
    headers = {"X-Crisp-Request-Timestamp": VECTOR_TIMESTAMP, "X-Crisp-Signature": VECTOR_SIGNATURE}
    received = datetime.fromtimestamp(1506985697, tz=UTC)
    (item,) = ADAPTER.parse(source, inbound(MESSAGE_SEND_COMPACT, headers, received))
    assert isinstance(item, RawSubmission)
    assert item.fields == {"message": "Hey :)"}  # the visitor493603 nickname is not a name
    assert item.session_key == SESSION
    assert item.delivery_id == f"{SESSION}:message:send:1506985696616:150698569649423"
    assert item.optional_contact is True


def test_a_body_signed_as_json_stringify_writes_it_verifies_though_the_raw_bytes_differ():
    # message_send.json has the docs' spaces and blank lines; Crisp's libraries sign JSON.stringify(body).
    source = crisp_config("plugin", secrets=(PLUGIN_SECRET,)).sources["crisp"]
    headers = {"X-Crisp-Request-Timestamp": VECTOR_TIMESTAMP, "X-Crisp-Signature": VECTOR_SIGNATURE}
    received = datetime.fromtimestamp(1506985697, tz=UTC)
    (item,) = ADAPTER.parse(source, inbound(MESSAGE_SEND, headers, received))
    assert isinstance(item, RawSubmission)
    assert item.fields == {"message": "Hey :)"}


def test_a_timestamp_in_seconds_is_accepted_by_its_size():
    source = crisp_config("plugin", secrets=(PLUGIN_SECRET,)).sources["crisp"]
    now = int(time.time())
    headers = plugin_headers(MESSAGE_SEND, timestamp=str(now))
    (item,) = ADAPTER.parse(source, inbound(MESSAGE_SEND, headers, datetime.fromtimestamp(now + 60, tz=UTC)))
    assert isinstance(item, RawSubmission)
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, inbound(MESSAGE_SEND, headers, datetime.fromtimestamp(now + 90_000, tz=UTC)))


async def test_a_signed_plugin_hook_goes_through_the_same_piecewise_flow(make_client, db):
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    response = await client.post("/v1/chats/crisp", data=MESSAGE_SEND, headers=plugin_headers(MESSAGE_SEND))
    assert response.status == 202
    body = json.dumps(SET_EMAIL).encode()
    response = await client.post("/v1/chats/crisp", data=body, headers=plugin_headers(body))
    assert response.status == 201
    row = await db.fetchrow(CONTACT_ROW)
    assert (row["email"], row["message"]) == ("jane@example.com", "Hey :)")


async def test_the_vector_replayed_years_later_gets_401(make_client, db):
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    headers = {"X-Crisp-Request-Timestamp": VECTOR_TIMESTAMP, "X-Crisp-Signature": VECTOR_SIGNATURE, **JSON}
    response = await client.post("/v1/chats/crisp", data=MESSAGE_SEND_COMPACT, headers=headers)
    assert response.status == 401


async def test_a_retry_carrying_the_first_attempts_timestamp_an_hour_later_is_taken(make_client, db):
    # Crisp stamps a hook when it is emitted and retries failed ones (after our 503s).
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    stamp = str(int((time.time() - 3600) * 1000))
    response = await client.post(
        "/v1/chats/crisp", data=MESSAGE_SEND, headers=plugin_headers(MESSAGE_SEND, timestamp=stamp)
    )
    assert response.status == 202
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 1


@pytest.mark.parametrize("age_seconds", [-90_000, 90_000])
async def test_a_plugin_hook_outside_the_24_hour_window_gets_401(make_client, db, age_seconds):
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    stamp = str(int((time.time() - age_seconds) * 1000))
    response = await client.post(
        "/v1/chats/crisp", data=MESSAGE_SEND, headers=plugin_headers(MESSAGE_SEND, timestamp=stamp)
    )
    assert response.status == 401
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h | {"X-Crisp-Signature": "0" * 64},
        lambda h: h | {"X-Crisp-Signature": h["X-Crisp-Signature"][:-2]},
        lambda h: h | {"X-Crisp-Signature": "sha256=" + h["X-Crisp-Signature"]},
        lambda h: h | {"X-Crisp-Signature": "zz" * 32},
        lambda h: {k: v for k, v in h.items() if k != "X-Crisp-Signature"},
        lambda h: {k: v for k, v in h.items() if k != "X-Crisp-Request-Timestamp"},
        lambda h: h | {"X-Crisp-Request-Timestamp": "yesterday"},
        lambda h: h | {"X-Crisp-Request-Timestamp": str(int(h["X-Crisp-Request-Timestamp"]) + 1)},
        lambda h: h | {"X-Crisp-Request-Timestamp": "1" * 30},
    ],
    ids=[
        "wrong",
        "short",
        "prefixed",
        "not-hex",
        "missing",
        "no-timestamp",
        "bad-timestamp",
        "other-timestamp",
        "huge",
    ],
)
async def test_a_bad_plugin_signature_gets_401(make_client, db, mangle):
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    headers = mangle(plugin_headers(MESSAGE_SEND))
    response = await client.post("/v1/chats/crisp", data=MESSAGE_SEND, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}


async def test_a_plugin_hook_signed_with_another_secret_or_only_carrying_the_key_gets_401(make_client):
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    response = await client.post(
        "/v1/chats/crisp", data=MESSAGE_SEND, headers=plugin_headers(MESSAGE_SEND, secret="other")
    )
    assert response.status == 401
    response = await client.post(f"/v1/chats/crisp?key={PLUGIN_SECRET}", data=MESSAGE_SEND, headers=JSON)
    assert response.status == 401


async def test_an_unparseable_body_with_a_signature_over_it_gets_400(make_client):
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,)))
    body = b"{not json"
    response = await client.post("/v1/chats/crisp", data=body, headers=plugin_headers(body))
    assert response.status == 400


# --- type surprises -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        with_data(SET_EMAIL, email=["jane@example.com"]),
        with_data(SET_EMAIL, email={"address": "jane@example.com"}),
        with_data(SET_EMAIL, email=42),
        with_data(SET_EMAIL, email="<script>alert(1)</script>"),
        with_data(SET_PHONE, phone=33612345678.0),
        with_data(SET_PHONE, phone=True),
        with_data(SET_NICKNAME, nickname=["Jane"]),
        with_data(SET_NICKNAME, nickname="<b>Jane</b>" * 100),
        message_send(user="visitor"),
        message_send(user={"nickname": 12}),
        message_send(content="x" * 20_000),
        message_send(fingerprint={"a": 1}, timestamp=None) | {"timestamp": "soon"},
        SET_EMAIL | {"data": {"session_id": SESSION, "email": "jane@example.com"}, "timestamp": [1]},
        SET_EMAIL | {"website_id": None},
    ],
    ids=[
        "email-list",
        "email-object",
        "email-number",
        "email-html",
        "phone-float",
        "phone-bool",
        "nickname-list",
        "nickname-html",
        "user-string",
        "nickname-number",
        "huge-message",
        "odd-ids",
        "timestamp-list",
        "website-null",
    ],
)
async def test_surprising_types_never_cause_a_server_error(make_client, db, payload):
    client = await make_client(crisp_config())
    response = await hook(client, payload)
    assert response.status in (200, 201, 202)


@pytest.mark.parametrize(
    "payload",
    [
        SET_EMAIL | {"data": {"email": "jane@example.com"}},
        SET_EMAIL | {"data": "session_x"},
        SET_EMAIL | {"data": {"session_id": 7 * [SESSION], "email": "jane@example.com"}},
        message_send(session_id=None),
    ],
    ids=["no-session", "data-string", "session-list", "message-without-session"],
)
async def test_a_contact_event_without_a_session_gets_400(make_client, payload):
    client = await make_client(crisp_config())
    response = await hook(client, payload)
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hook": "webhook"}, r"options\.hook: website or plugin"),
        ({"hook": 1}, r"options\.hook"),
        ({"hook": "plugin", "key_parameter": "key"}, r"options\.key_parameter: only for website hooks"),
        ({"key_parameter": "a b"}, r"options\.key_parameter"),
        ({"secret": "x"}, r"options\.secret: unknown option"),
        ({"website_ids": "one"}, r"options\.website_ids"),
        ({"website_ids": []}, r"options\.website_ids"),
    ],
)
def test_bad_hook_options_are_refused_at_start_up(options, message):
    with pytest.raises(ConfigError, match=rf"sources\.crisp\.{message}"):
        crisp_config(**options)


async def test_a_plugin_hook_from_a_website_not_ours_is_acknowledged_and_stores_nothing(make_client, db):
    # A plugin receives the events of every website that installed it.
    ours = message_send()["website_id"]
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,), website_ids=["another-site"]))
    response = await client.post("/v1/chats/crisp", data=MESSAGE_SEND, headers=plugin_headers(MESSAGE_SEND))
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "other_website"}
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 0
    client = await make_client(crisp_config("plugin", secrets=(PLUGIN_SECRET,), website_ids=[ours]))
    response = await client.post("/v1/chats/crisp", data=MESSAGE_SEND, headers=plugin_headers(MESSAGE_SEND))
    assert response.status == 202
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_chats") == 1


async def test_a_key_with_a_plus_pasted_as_is_into_the_url_verifies(make_client, db):
    key = "ab+cd/ef=="
    client = await make_client(crisp_config(secrets=(key,)))
    body = json.dumps(SET_EMAIL).encode()
    response = await client.post(f"/v1/chats/crisp?key={key}", data=body, headers=JSON)
    assert response.status == 201
    response = await client.post("/v1/chats/crisp?key=ab%2Bcd%2Fef%3D%3D", data=body, headers=JSON)
    assert response.status == 200  # the same event again: a duplicate, so the key verified
    response = await client.post("/v1/chats/crisp?key=ab%20cd/ef==", data=body, headers=JSON)
    assert response.status == 401


def test_field_mappings_are_refused_because_crisp_has_no_form_fields():
    with pytest.raises(ConfigError, match=r"sources\.crisp\.fields"):
        config_with_source(
            "crisp",
            secrets={"CRISP_SECRET": KEY},
            channel="chat",
            format="crisp",
            purposes=["contact"],
            secret_env="CRISP_SECRET",
            fields={"email": "mail"},
        )
