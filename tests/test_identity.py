"""Who a contact is: one canonical e-mail key, and what an unauthenticated form may not change."""
# ruff: noqa: RUF001 - look-alike letters (fullwidth, Greek) are what these tests are about

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from ingest.pseudonyms import canonical_email
from ingest.store import migrations
from ingest.web.app import create_app
from tests.support import (
    ADMIN_TOKEN,
    ORIGIN,
    PEPPER,
    dump_database,
    quote_db_name,
    sign_standard,
    with_database,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORM_HEADERS = {"Origin": ORIGIN, "Accept": "application/json"}
VICTIM = {
    "name": "Maija Meikäläinen",
    "email": "maija@example.fi",
    "phone": "040 123 4567",
    "message": "My private question about my contract",
}


async def _form(client, data: dict[str, str]) -> dict:
    response = await client.post("/v1/forms/website-contact", data=data, headers=FORM_HEADERS)
    assert response.status == 201, await response.text()
    return await response.json()


async def _signed(client, path: str, payload: dict) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    response = await client.post(path, data=body, headers=sign_standard(body))
    return response.status, await response.json()


async def test_a_browser_form_cannot_rewrite_a_known_persons_name_phone_or_lift_their_objection(client, db):
    await _form(client, VICTIM)
    opt = await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    assert opt.status == 200
    # A stranger posts the victim's address with their own name and phone, and ticks marketing.
    planted = await _form(
        client,
        {"name": "Eve Attacker", "email": "maija@example.fi", "phone": "050 987 6543", "marketing": "on"},
    )
    contact = await db.fetchrow("SELECT name, phone, marketing_allowed FROM crm.contacts")
    assert (contact["name"], contact["phone"], contact["marketing_allowed"]) == (
        "Maija Meikäläinen",
        "+358401234567",
        False,
    )
    # What the stranger's submission said stays on that submission, for the CRM to see.
    said = await db.fetchrow(
        "SELECT name, email, phone FROM crm.submissions WHERE submission_id = $1",
        uuid.UUID(planted["submission_id"]),
    )
    assert tuple(said) == ("Eve Attacker", "maija@example.fi", "+358509876543")
    # Exporting by the planted phone hands over nothing of the victim's.
    response = await client.get("/v1/subjects", params={"phone": "050 987 6543"}, headers=ADMIN)
    document = await response.json()
    assert document["contacts"] == []
    assert "private question" not in json.dumps(document)
    assert [n["contacts"] for n in document["review"]] == [1]  # the officer is told it exists


async def test_a_signed_source_updates_a_known_contact_newest_winning(client, db):
    await _form(client, VICTIM)
    status, _ = await _signed(
        client,
        "/v1/forms/partner-forms",
        {"name": "Maija M. Virtanen", "email": "maija@example.fi", "phone": "050 111 2222"},
    )
    assert status == 201
    contact = await db.fetchrow("SELECT name, phone FROM crm.contacts")
    assert tuple(contact) == ("Maija M. Virtanen", "+358501112222")


async def test_a_phone_only_chat_never_joins_a_contact_keyed_by_an_email(client, db):
    # Eve registers her own address next to Maija's phone number...
    await _form(client, {"name": "Eve", "email": "eve@example.com", "phone": "040 123 4567"})
    # ...then Maija chats, giving only her phone.
    status, _ = await _signed(
        client, "/v1/chats/partner-chat", {"phone": "040 123 4567", "message": "Maija's chat"}
    )
    assert status == 201
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 2
    response = await client.get("/v1/subjects", params={"email": "eve@example.com"}, headers=ADMIN)
    assert "Maija's chat" not in json.dumps(await response.json())
    response = await client.get("/v1/subjects", params={"phone": "040 123 4567"}, headers=ADMIN)
    by_phone = await response.json()
    assert [s["message"] for c in by_phone["contacts"] for s in c["submissions"]] == ["Maija's chat"]
    assert "eve@example.com" not in json.dumps(by_phone["contacts"])


@pytest.mark.parametrize(
    ("given", "erased"),
    [
        ("ΣΑΣ@example.gr", "σας@example.gr"),  # final sigma: lower() disagrees, case folding does not
        ("ÄIJÄ.Öhman@example.fi", "äijä.öhman@example.fi"),
        ("Maija@Example.FI", "maija@example.fi"),
    ],
)
async def test_an_erasure_by_another_spelling_of_the_address_erases_the_person(client, db, given, erased):
    await _form(client, {"email": given, "message": "Erase me"})
    response = await client.delete("/v1/subjects", params={"email": erased}, headers=ADMIN)
    assert (await response.json())["removed"]["contacts"] == 1
    assert "Erase me" not in await dump_database(db)


async def test_an_objection_covers_the_address_written_with_fullwidth_letters(client, db):
    await _form(client, {"email": "maija@example.fi"})
    await client.post("/v1/subjects/opt-out", json={"email": "maija@example.fi"}, headers=ADMIN)
    await _form(client, {"email": "ｍａｉｊａ@example.fi", "marketing": "on"})
    rows = await db.fetch("SELECT marketing_allowed FROM crm.contacts")
    assert [r["marketing_allowed"] for r in rows] == [False]


def test_the_canonical_key_is_one_for_every_spelling():
    assert (
        canonical_email("ΣΑΣ@example.gr")
        == canonical_email("σας@example.gr")
        == canonical_email("σασ@example.gr")
    )
    assert (
        canonical_email("ｍａｉｊａ@example.fi") == canonical_email("MAIJA@example.fi") == "maija@example.fi"
    )
    assert canonical_email(canonical_email("ÄIJÄ.Öhman@example.fi")) == canonical_email(
        "ÄIJÄ.Öhman@example.fi"
    )


@pytest.fixture
def c_locale_dsn(server_dsn):
    """A migrated database whose LC_CTYPE is C (CloudNativePG's default), where SQL lower('Ä') is 'Ä'."""
    import asyncio

    name = f"ingest_c_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(
                f"CREATE DATABASE {quote_db_name(name)} TEMPLATE template0 LC_CTYPE 'C' LC_COLLATE 'C'"
            )
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(server_dsn, name))
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await asyncpg.connect(server_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_db_name(name)} WITH (FORCE)")
        finally:
            await admin.close()

    asyncio.run(create())
    yield with_database(server_dsn, name)
    asyncio.run(drop())


async def test_on_a_c_locale_database_two_spellings_are_one_contact_and_one_erasure(
    aiohttp_client, c_locale_dsn, config, log_output
):
    client = await aiohttp_client(create_app(config, c_locale_dsn, PEPPER))
    await _form(client, {"email": "ÄIJÄ.Öhman@example.fi", "message": "first"})
    await _form(client, {"email": "äijä.öhman@example.fi", "message": "second"})
    conn = await asyncpg.connect(c_locale_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM crm.contacts") == 1
        response = await client.delete(
            "/v1/subjects", params={"email": "äijä.öhman@example.fi"}, headers=ADMIN
        )
        assert (await response.json())["removed"]["submissions"] == 2
        assert await conn.fetchval("SELECT count(*) FROM ingest.submissions") == 0
    finally:
        await conn.close()
