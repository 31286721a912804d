"""Jotform webhooks: multipart bodies with the answers as JSON in `rawRequest`, a secret `key` in the URL.

Payloads (tests/fixtures/jotform/, decoded part maps): minimal_submission.json, the
`minimalSubmission` example of the "Jotform Webhooks AsyncAPI" description
(https://github.com/api-evangelist/jotform/blob/main/asyncapi/jotform-asyncapi.yml), and
development_support.json, a published third-party capture (see the fixture README). Jotform's
help page "How to Set Up a Webhook with Jotform"
(https://www.jotform.com/help/245-how-to-setup-a-webhook-with-jotform/) documents no signature.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.adapters.jotform import ADAPTER, read_raw_request
from ingest.domain import InboundRequest, RawSubmission
from ingest.errors import ConfigError, InvalidSignature, MalformedBody
from tests.support import config_with_source, dump_database

SECRET = "jotform-url-key-4f0c2b7e9a1d"
PATH = "/v1/forms/jotform-contact"
URL = f"{PATH}?key={SECRET}"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "jotform"
MINIMAL = json.loads((FIXTURES / "minimal_submission.json").read_text())
CAPTURE = json.loads((FIXTURES / "development_support.json").read_text())


def jotform_config(secrets=(SECRET,), **source):
    names = [f"JOTFORM_SECRET_{i}" for i in range(len(secrets))]
    return config_with_source(
        "jotform-contact",
        secrets=dict(zip(names, secrets, strict=True)),
        channel="form",
        format="jotform",
        purposes=["contact"],
        secret_env=names,
        **source,
    )


def multipart(parts: dict[str, str] | list[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
    boundary = f"------------------------{uuid.uuid4().hex}"
    chunks = []
    for name, value in parts.items() if isinstance(parts, dict) else parts:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def urlencoded(parts: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return urllib.parse.urlencode(parts).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def minimal(**answers) -> dict[str, str]:
    parts = copy.deepcopy(MINIMAL)
    raw = json.loads(parts["rawRequest"]) | answers
    parts["rawRequest"] = json.dumps(raw)
    return parts


def request(body: bytes, headers: dict[str, str], key: str | None = SECRET) -> InboundRequest:
    return InboundRequest(
        headers={k.lower(): v for k, v in headers.items()},
        query={} if key is None else {"key": key},
        body=body,
        content_type=headers.get("Content-Type", ""),
        received_at=datetime.now(UTC),
    )


async def test_the_documented_minimal_submission_stores_the_full_name_and_email(make_client, db):
    client = await make_client(jotform_config())
    body, headers = multipart(MINIMAL)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.email, c.phone, s.message, s.source, s.channel FROM crm.submissions s "
        "JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {
        "name": "Kin Lane",
        "email": "kin@example.com",
        "phone": None,
        "message": None,
        "source": "jotform-contact",
        "channel": "form",
    }
    assert "203112345678901" not in await dump_database(db)  # formID


async def test_the_captured_submission_without_email_or_phone_is_acknowledged_and_stores_nothing(
    make_client, db
):
    # DESIGN §8 / issue 16.2: Jotform cannot fix the delivery; it is acknowledged as ignored.
    client = await make_client(jotform_config())
    body, headers = multipart(CAPTURE)
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 202
    assert await response.json() == {"status": "ignored", "reason": "no_contact_details"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_the_captured_submission_with_an_email_keeps_only_the_name_and_email(make_client, db):
    parts = copy.deepcopy(CAPTURE)
    raw = json.loads(parts["rawRequest"])
    raw["q75_email"] = "britney@example.com"
    parts["rawRequest"] = json.dumps(raw)
    client = await make_client(jotform_config())
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow("SELECT name, email FROM crm.contacts")
    assert dict(row) == {"name": "Britney", "email": "britney@example.com"}  # q69_1Name69: "1. Name"
    stored = await dump_database(db)
    for dropped in ("180.93.7.14", "Josh_Groupmatics", "New ISM", "Development Support", "10JqY3b"):
        assert dropped not in stored  # ip, username, answers, form title, event_id


async def test_phone_and_message_questions_fill_their_fields(make_client, db):
    parts = minimal(
        q3_fullName={"first": "Kin", "middle": "", "last": "Lane"},
        q5_phoneNumber={"full": "(040) 123-4567"},
        q6_message="Please call me.",
        q7_dateOfBirth={"month": "01", "day": "02", "year": "1990"},
        q8_address={"addr_line1": "Mannerheimintie 1", "city": "Helsinki"},
    )
    client = await make_client(jotform_config())
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    row = await db.fetchrow(
        "SELECT c.name, c.phone, s.message FROM crm.submissions s JOIN crm.contacts c USING (contact_id)"
    )
    assert dict(row) == {"name": "Kin Lane", "phone": "+358401234567", "message": "Please call me."}
    stored = await dump_database(db)
    for dropped in ("1990", "Mannerheimintie"):
        assert dropped not in stored


async def test_a_phone_in_area_and_number_parts_is_joined(make_client, db):
    parts = minimal(q4_email="", q5_phone={"area": "040", "phone": "1234567"})
    client = await make_client(jotform_config())
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT phone FROM crm.contacts") == "+358401234567"


async def test_comments_fill_the_message_and_the_fields_table_names_an_exact_key(make_client, db):
    parts = minimal(q6_comments="From comments", q9_yourQuestion="From the named key")
    client = await make_client(jotform_config())
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "From comments"

    client = await make_client(jotform_config(fields={"message": "q9_yourQuestion"}))
    parts["submissionID"] = "5123456789012345679"
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    messages = [r["message"] for r in await db.fetch("SELECT message FROM crm.submissions ORDER BY seq")]
    assert messages == ["From comments", "From the named key"]


async def test_a_ticked_checkbox_named_in_consent_fields_grants_consent(make_client, db):
    parts = minimal(q10_newsletter=["Yes, send me QualityDesk news"])
    client = await make_client(jotform_config(consent_fields={"q10_newsletter": "marketing-email-v1"}))
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True


async def test_an_unticked_checkbox_is_not_granted(make_client, db):
    parts = minimal(q10_newsletter="")
    client = await make_client(jotform_config(consent_fields={"newsletter": "marketing-email-v1"}))
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT granted FROM crm.consents") is False


async def test_an_urlencoded_body_is_read_the_same_way(make_client, db):
    client = await make_client(jotform_config())
    body, headers = urlencoded(MINIMAL)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT email FROM crm.contacts") == "kin@example.com"


async def test_a_slash_escaped_raw_request_is_unescaped(make_client, db):
    raw = json.dumps({"q3_name": {"first": 'Kin "K"', "last": "La\\ne"}, "q4_email": "kin@example.com"})
    escaped = raw.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")  # PHP addslashes
    parts = MINIMAL | {"rawRequest": escaped}
    client = await make_client(jotform_config())
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    assert await db.fetchval("SELECT name FROM crm.contacts") == 'Kin "K" La\\ne'


def test_plain_json_is_read_as_is_even_with_escapes_inside_strings():
    assert read_raw_request('{"slug":"submit\\/70936128142151\\/","q1_x":"a \\"b\\""}') == {
        "slug": "submit/70936128142151/",
        "q1_x": 'a "b"',
    }


@pytest.mark.parametrize(
    "raw",
    ["{not json", '{\\"q4_email\\":', "[]", '"text"', "", "\\", '{"a":1,"a":2}'],
)
async def test_an_unparseable_raw_request_gets_400(make_client, db, raw):
    client = await make_client(jotform_config())
    body, headers = multipart(MINIMAL | {"rawRequest": raw})
    response = await client.post(URL, data=body, headers=headers)
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


@pytest.mark.parametrize(
    "parts",
    [
        {k: v for k, v in MINIMAL.items() if k != "rawRequest"},
        {k: v for k, v in MINIMAL.items() if k != "submissionID"},
        MINIMAL | {"submissionID": ""},
        MINIMAL | {"submissionID": "x" * 201},
        [*MINIMAL.items(), ("submissionID", "5123456789012345679")],
        [*MINIMAL.items(), ("rawRequest", "{}")],
    ],
    ids=["no-raw-request", "no-submission-id", "empty-id", "long-id", "two-ids", "two-raw-requests"],
)
async def test_a_body_without_one_submission_id_and_raw_request_gets_400(make_client, parts):
    client = await make_client(jotform_config())
    body, headers = multipart(parts)
    assert (await client.post(URL, data=body, headers=headers)).status == 400


@pytest.mark.parametrize(
    "url",
    [PATH, f"{PATH}?key=", f"{PATH}?key=wrong-key", f"{PATH}?token={SECRET}", f"{PATH}?key={SECRET}x"],
    ids=["missing", "empty", "wrong", "other-name", "longer"],
)
async def test_a_missing_or_wrong_key_gets_401_and_stores_nothing(make_client, db, url):
    client = await make_client(jotform_config())
    body, headers = multipart(MINIMAL)
    response = await client.post(url, data=body, headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": "invalid_signature"}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 0


async def test_the_key_is_checked_before_the_body_is_read(make_client):
    client = await make_client(jotform_config())
    response = await client.post(PATH, data=b"not multipart", headers={"Content-Type": "multipart/form-data"})
    assert response.status == 401


async def test_the_old_and_the_new_key_both_verify_during_rotation(make_client):
    new = "jotform-new-url-key-b83e01"
    client = await make_client(jotform_config(secrets=(SECRET, new)))
    for i, key in enumerate((SECRET, new)):
        body, headers = multipart(MINIMAL | {"submissionID": f"512345678901234567{i}"})
        assert (await client.post(f"{PATH}?key={key}", data=body, headers=headers)).status == 201


async def test_a_redelivery_answers_200_with_the_first_id(make_client, db):
    client = await make_client(jotform_config())
    body, headers = multipart(MINIMAL)
    first = await (await client.post(URL, data=body, headers=headers)).json()
    body, headers = multipart(MINIMAL)
    again = await client.post(URL, data=body, headers=headers)
    assert again.status == 200
    assert await again.json() == {"status": "duplicate", "submission_id": first["submission_id"]}
    assert await db.fetchval("SELECT count(*) FROM ingest.submissions") == 1


async def test_a_json_body_gets_415(make_client):
    client = await make_client(jotform_config())
    response = await client.post(URL, data=json.dumps(MINIMAL), headers={"Content-Type": "application/json"})
    assert response.status == 415


async def test_a_file_part_gets_422(make_client):
    client = await make_client(jotform_config())
    body, headers = multipart(MINIMAL)
    boundary = headers["Content-Type"].split("boundary=")[1]
    file_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="a.txt"\r\n\r\nhello\r\n'
    ).encode()
    response = await client.post(URL, data=file_part + body, headers=headers)
    assert response.status == 422


@pytest.mark.parametrize(
    "answers",
    [
        {"q4_email": None},
        {"q4_email": ["kin@example.com"]},
        {"q4_email": {"full": "kin@example.com"}},
        {"q4_email": 42},
        {"q3_name": {"first": None, "last": ["Lane"]}},
        {"q3_name": {"first": 1, "last": {}}},
        {"q3_name": "<b>Kin</b>\u0000<script>alert(1)</script>"},
        {"q5_phoneNumber": {"full": 358401234567}},
        {"q5_phoneNumber": {"area": None, "phone": "  "}},
        {"q5_phoneNumber": [1, 2]},
        {"q_email": "x", "qq4_email": "y", "q4": "z", "q4_": "w"},
        {"slug": {"x": 1}, "event_id": None},
    ],
)
async def test_unexpected_types_never_cause_a_server_error(make_client, answers):
    client = await make_client(jotform_config())
    body, headers = multipart(minimal(**answers))
    response = await client.post(URL, data=body, headers=headers)
    assert response.status in (201, 202)


def test_parse_returns_one_submission_with_the_submission_id_as_delivery_id():
    source = jotform_config().sources["jotform-contact"]
    items = ADAPTER.parse(source, request(*multipart(MINIMAL)))
    assert len(items) == 1
    assert isinstance(items[0], RawSubmission)
    assert items[0].delivery_id == "5123456789012345678"
    assert items[0].fields == {"name": "Kin Lane", "email": "kin@example.com"}
    with pytest.raises(InvalidSignature):
        ADAPTER.parse(source, request(*multipart(MINIMAL), key=None))
    with pytest.raises(MalformedBody):
        ADAPTER.parse(source, request(*multipart(MINIMAL | {"rawRequest": "{"})))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"fields": {"email": " "}}, "sources.jotform-contact.fields.email: must name a provider field"),
        ({"options": {"form_id": "1"}}, "sources.jotform-contact.options.form_id: unknown option"),
    ],
)
def test_a_mapping_that_cannot_work_is_a_config_error_naming_the_key(source, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        jotform_config(**source)


async def test_a_mapped_field_missing_from_a_submission_is_counted_by_its_config_key(make_client, db):
    # Issue 16.4: a renamed form field must be noticed, for Jotform as for the others.
    from tests.adapters._metrics import metric_value

    client = await make_client(jotform_config(fields={"message": "q99_renamed"}))
    body, headers = multipart(MINIMAL)
    assert (await client.post(URL, data=body, headers=headers)).status == 201
    name = "ingest_mapped_field_absent_total"
    assert await metric_value(client, name, source="jotform-contact", field="fields.message") == 1
