"""The ledgers' HMAC chains: what the database owner can no longer rewrite unseen (store/ledger.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time

import asyncpg
import pytest

from ingest import audit
from ingest.store import ledger, ledger_verify, migrations
from ingest.web.keys import POOL
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
FORM_HEADERS = {"Origin": ORIGIN, "Accept": "application/json"}
TEXT_SHA = hashlib.sha256(b"Yes").hexdigest()


async def _form(client, email: str, *, marketing: bool = True) -> None:
    data = {"email": email, "message": "hello"} | ({"marketing": "on"} if marketing else {})
    response = await client.post("/v1/forms/website-contact", data=data, headers=FORM_HEADERS)
    assert response.status == 201, await response.text()


async def _partner_form(client, email: str) -> None:
    body = json.dumps({"email": email, "consents": {"marketing-email-v1": True}}).encode()
    response = await client.post("/v1/forms/partner-forms", data=body, headers=sign_standard(body))
    assert response.status == 201, await response.text()


async def _opt_out(client, email: str) -> None:
    response = await client.post("/v1/subjects/opt-out", json={"email": email}, headers=ADMIN)
    assert response.status == 200, await response.text()


async def _verify(pool, pepper: str = PEPPER, anchors=()) -> dict[str, ledger_verify.ChainReport]:
    return {r.chain: r for r in await audit.verify_chains(pool, pepper, anchors)}


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INGEST_CONFIG"}
    env |= {"DATABASE_URL": dsn, "INGEST_PEPPER": PEPPER}
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


# What an owner with the old design in mind does: recompute every row's hash the way
# migration 004 did (plain SHA-256), close the positions up, and rewrite the heads.
_RECOMPUTE_AS_SHA = """
DO $$
DECLARE r record; prev text := 'genesis'; n bigint := 0; h text;
BEGIN
    FOR r IN SELECT * FROM ingest.consent_events ORDER BY chain_pos LOOP
        n := n + 1;
        h := encode(sha256(convert_to(concat_ws('|', prev, r.event_id::text, r.consent_id, r.purpose,
                 r.granted::text, r.text_sha256, r.source, coalesce(r.notice_version, ''),
                 to_char(r.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')), 'UTF8')), 'hex');
        UPDATE ingest.consent_events SET chain_pos = -n, prev_hash = prev, row_hash = h
         WHERE event_id = r.event_id;
        prev := h;
    END LOOP;
    UPDATE ingest.consent_events SET chain_pos = -chain_pos;
    UPDATE ingest.chain_heads SET position = n, head = prev WHERE chain = 'consent_events';
    prev := 'genesis'; n := 0;
    FOR r IN SELECT * FROM ingest.audit_log ORDER BY chain_pos LOOP
        n := n + 1;
        h := encode(sha256(convert_to(concat_ws('|', prev, r.audit_id::text, r.actor, r.action,
                 r.details::text, to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')), 'UTF8')), 'hex');
        UPDATE ingest.audit_log SET chain_pos = -n, prev_hash = prev, row_hash = h WHERE audit_id = r.audit_id;
        prev := h;
    END LOOP;
    UPDATE ingest.audit_log SET chain_pos = -chain_pos;
    UPDATE ingest.chain_heads SET position = n, head = prev WHERE chain = 'audit_log';
END $$
"""


@pytest.mark.parametrize(
    "move_boundary", [False, True], ids=["keyed-rows-as-sha", "all-rows-declared-legacy"]
)
async def test_an_owner_who_rewrites_the_ledgers_and_recomputes_the_hashes_is_caught(
    client, db, db_dsn, move_boundary
):
    await _form(client, "maija@example.fi")
    await _form(client, "pekka@example.fi")
    await _opt_out(client, "maija@example.fi")
    await client.get("/v1/subjects", params={"email": "pekka@example.fi"}, headers=ADMIN)
    assert all(r.ok for r in (await _verify(client.app[POOL])).values())
    assert _cli(db_dsn, "audit", "verify").returncode == 0

    # As the owner: triggers off, the objection becomes a grant, the opt-out's audit row goes.
    await db.execute("ALTER TABLE ingest.consent_events DISABLE TRIGGER USER")
    await db.execute("ALTER TABLE ingest.audit_log DISABLE TRIGGER USER")
    grant = await db.fetchrow(
        "SELECT consent_id, text_sha256 FROM ingest.consent_events WHERE granted LIMIT 1"
    )
    changed = await db.execute(
        "UPDATE ingest.consent_events SET granted = true, consent_id = $1, text_sha256 = $2"
        " WHERE consent_id = 'objection-direct-marketing'",
        grant["consent_id"],
        grant["text_sha256"],
    )
    assert changed == "UPDATE 1"
    assert await db.execute("DELETE FROM ingest.audit_log WHERE action = 'opt-out'") == "DELETE 1"
    await db.execute(_RECOMPUTE_AS_SHA)
    if move_boundary:  # every row is now "legacy": the owner hopes verify checks SHA-256 only
        await db.execute("UPDATE ingest.chain_heads SET keyed_from = position + 1, head_mac = NULL")

    reports = await _verify(client.app[POOL])
    assert not reports["consent_events"].ok
    assert not reports["audit_log"].ok
    if move_boundary:
        assert "carries no MAC" in reports["consent_events"].line
    else:
        assert "at position 1 " in reports["consent_events"].line
        assert "HMAC does not verify" in reports["consent_events"].line
    result = _cli(db_dsn, "audit", "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert [line.split(":")[1].split()[0] for line in result.stdout.splitlines()] == ["BROKEN", "BROKEN"]


async def test_a_ledger_row_inserted_with_a_null_hash_breaks_the_chain(client, db):
    await _form(client, "maija@example.fi")
    await _form(client, "pekka@example.fi")
    await db.execute(
        """
        INSERT INTO ingest.consent_events (consent_id, purpose, granted, text_sha256, source, chain_pos)
        SELECT consent_id, purpose, true, text_sha256, source, 3 FROM ingest.consent_events LIMIT 1
        """
    )
    await db.execute("UPDATE ingest.chain_heads SET position = 3 WHERE chain = 'consent_events'")
    report = (await _verify(client.app[POOL]))["consent_events"]
    assert report.line.startswith("consent_events: BROKEN at position 3 "), report.line
    assert "the row has no hash" in report.line


async def test_a_gap_or_a_missing_position_breaks_the_chain(client, db):
    for i in range(4):
        await _form(client, f"p{i}@example.fi")
    pool = client.app[POOL]
    assert (await _verify(pool))["consent_events"].ok
    await db.execute("ALTER TABLE ingest.consent_events DISABLE TRIGGER USER")
    await db.execute("DELETE FROM ingest.consent_events WHERE chain_pos = 2")
    report = (await _verify(pool))["consent_events"]
    assert "BROKEN at position 3 " in report.line
    assert "positions 2..2 are missing" in report.line

    await db.execute("ALTER TABLE ingest.consent_events ALTER COLUMN chain_pos DROP NOT NULL")
    await db.execute("UPDATE ingest.consent_events SET chain_pos = NULL WHERE chain_pos = 3")
    report = (await _verify(pool))["consent_events"]
    assert "row(s) without a chain position" in report.line


async def test_a_tail_cut_off_is_caught_by_the_head_mac_or_else_by_an_anchored_head(client, db, db_dsn):
    pool = client.app[POOL]
    for i in range(3):
        await _opt_out(client, f"p{i}@example.fi")
    saved = await db.fetchrow(
        "SELECT * FROM ingest.chain_heads WHERE chain = 'audit_log'"
    )  # the owner's copy
    for i in range(3, 5):
        await _opt_out(client, f"p{i}@example.fi")
    printed = _cli(db_dsn, "audit", "head")
    assert printed.returncode == 0, printed.stderr
    heads = {h["chain"]: h for h in json.loads(printed.stdout)}
    assert heads["audit_log"]["position"] == 5
    anchor = heads["audit_log"]["anchor"]
    assert anchor == f"audit_log={5}:{heads['audit_log']['head']}"

    await db.execute("ALTER TABLE ingest.audit_log DISABLE TRIGGER USER")
    await db.execute("DELETE FROM ingest.audit_log WHERE chain_pos > 3")
    # Moved back by hand: the head's MAC is the one of position 5.
    await db.execute(
        "UPDATE ingest.chain_heads SET position = 3, head = $1 WHERE chain = 'audit_log'", saved["head"]
    )
    assert "its MAC does not verify" in (await _verify(pool))["audit_log"].line
    # A head that does not verify is not offered for anchoring.
    refused = _cli(db_dsn, "audit", "head")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert "not printing heads" in refused.stderr

    # Moved back to a head the owner had kept: nothing inside the database tells...
    await db.execute(
        "UPDATE ingest.chain_heads SET head_mac = $1, updated_at = $2 WHERE chain = 'audit_log'",
        saved["head_mac"],
        saved["updated_at"],
    )
    assert (await _verify(pool))["audit_log"].ok
    # ...but the head anchored outside it does.
    report = (await _verify(pool, anchors=[ledger_verify.parse_anchor(anchor)]))["audit_log"]
    assert "the anchored position 5 is gone (truncated)" in report.line
    result = _cli(db_dsn, "audit", "verify", "--expect-head", anchor)
    assert result.returncode == 1
    assert "audit_log: BROKEN" in result.stdout
    assert _cli(db_dsn, "audit", "verify", "--expect-head", heads["consent_events"]["anchor"]).returncode == 0
    bad = _cli(db_dsn, "audit", "verify", "--expect-head", "audit_log=5")
    assert bad.returncode == 2
    assert "CHAIN=POSITION:HASH" in bad.stderr


async def test_an_anchored_head_that_was_rewritten_is_caught(client, db):
    pool = client.app[POOL]
    for i in range(2):
        await _opt_out(client, f"p{i}@example.fi")
    [_, audit_head] = await audit.ledger_heads(pool)
    anchor = ledger_verify.parse_anchor(audit_head.anchor())
    assert (await _verify(pool, anchors=[anchor]))["audit_log"].ok
    forged = ledger_verify.Anchor("audit_log", anchor.position, "0" * 64)
    assert "not the anchored head" in (await _verify(pool, anchors=[forged]))["audit_log"].line


async def test_concurrent_writers_keep_one_contiguous_chain_in_id_order(client, db):
    await asyncio.gather(
        *(_partner_form(client, f"f{i}@example.fi") for i in range(15)),
        *(_opt_out(client, f"o{i}@example.fi") for i in range(10)),
        *(_partner_form(client, f"o{i}@example.fi") for i in range(10)),
    )
    for table, id_column in (("consent_events", "event_id"), ("audit_log", "audit_id")):
        rows = await db.fetch(f"SELECT chain_pos, {id_column} AS id FROM ingest.{table} ORDER BY chain_pos")  # noqa: S608
        assert [r["chain_pos"] for r in rows] == list(range(1, len(rows) + 1))
        # Ids are drawn under the head's lock: id order is chain order (crm.consents relies on it).
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert await db.fetchval("SELECT count(*) FROM ingest.audit_log") == 10
    assert all(r.ok for r in (await _verify(client.app[POOL])).values())


async def test_another_pepper_does_not_verify_the_chains(client):
    await _form(client, "maija@example.fi")
    await _opt_out(client, "maija@example.fi")
    reports = await _verify(client.app[POOL], pepper="another-pepper-0123456789abcdef-01234")
    assert "at position 1 " in reports["consent_events"].line
    assert "HMAC does not verify" in reports["audit_log"].line


async def test_the_chain_key_never_reaches_the_database(client, db):
    await _form(client, "maija@example.fi")
    await _opt_out(client, "maija@example.fi")
    key = ledger.chain_key(PEPPER).hex()
    everything = await dump_database(db)
    everything += "\n".join(r["setting"] or "" for r in await db.fetch("SELECT setting FROM pg_settings"))
    assert "objection-direct-marketing" in everything  # the dump does hold the ledgers
    assert key not in everything
    assert PEPPER not in everything


async def test_the_head_metric_shows_when_each_chain_last_moved(aiohttp_client, app_dsn, db):
    from ingest.web.app import create_app

    raw = base_config_dict()
    raw.setdefault("limits", {})["maintenance_interval_seconds"] = 1
    client = await aiohttp_client(create_app(make_config(raw), app_dsn, PEPPER))
    await _opt_out(client, "maija@example.fi")
    updated = await db.fetchval("SELECT updated_at FROM ingest.chain_heads WHERE chain = 'consent_events'")
    deadline = time.monotonic() + 30
    while True:
        text = await (await client.get("/metrics")).text()
        samples = [
            line for line in text.splitlines() if line.startswith("ingest_ledger_head_timestamp_seconds{")
        ]
        if len(samples) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert sorted(s.split("}")[0] for s in samples) == [
        'ingest_ledger_head_timestamp_seconds{chain="audit_log"',
        'ingest_ledger_head_timestamp_seconds{chain="consent_events"',
    ]
    [consents] = [s for s in samples if "consent_events" in s]
    assert float(consents.split()[-1]) == pytest.approx(updated.timestamp(), abs=1e-3)


# --- rows from before migration 008 ---------------------------------------------------


async def _migrate(conn: asyncpg.Connection, upto: int | None = None) -> None:
    everything = migrations.load_migrations()
    await migrations.migrate(conn, everything if upto is None else everything[:upto])


async def _legacy_consent(conn: asyncpg.Connection, event_id: int, *, granted: bool) -> None:
    await conn.execute(
        """
        INSERT INTO ingest.consent_events (event_id, consent_id, purpose, granted, text_sha256, source)
        OVERRIDING SYSTEM VALUE VALUES ($1, 'legacy-v1', 'direct_marketing', $2, $3, 'website-contact')
        """,
        event_id,
        granted,
        TEXT_SHA,
    )


async def test_legacy_sha_rows_from_before_the_migration_still_verify_and_stay_guarded(empty_db):
    conn = await asyncpg.connect(empty_db)
    pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=2)
    try:
        await _migrate(conn, 7)
        await conn.execute(
            "INSERT INTO ingest.consent_texts (consent_id, purpose, text, text_sha256)"
            " VALUES ('legacy-v1', 'direct_marketing', 'Yes', $1)",
            TEXT_SHA,
        )
        # 004's triggers chained rows in insert order, whatever their ids (drawn before the lock).
        for event_id, granted in ((10, True), (5, False), (7, True)):
            await _legacy_consent(conn, event_id, granted=granted)
        for action in ("export", "opt-out"):
            await conn.execute(
                "INSERT INTO ingest.audit_log (actor, action, details) VALUES ('cli', $1, '{\"contacts\": 1}')",
                action,
            )
        await _migrate(conn)
        positions = await conn.fetch(
            "SELECT event_id, chain_pos FROM ingest.consent_events ORDER BY chain_pos"
        )
        assert [(r["event_id"], r["chain_pos"]) for r in positions] == [(10, 1), (5, 2), (7, 3)]
        # Not sealed with the key yet: the first row appended with it seals the legacy prefix.
        assert "carries no MAC" in (await _verify(pool))["consent_events"].line

        key = ledger.chain_key(PEPPER)
        async with pool.acquire() as c, c.transaction():
            event = ledger.ConsentEvent(
                None, "legacy-v1", "direct_marketing", granted=False, text_sha256=TEXT_SHA, source="cli"
            )
            await ledger.append_consent_events(c, key, [event])
            await ledger.append_audit(c, key, "cli", "export", {"contacts": 0})
        reports = await _verify(pool)
        assert reports["consent_events"].ok, reports["consent_events"].line
        assert reports["audit_log"].ok, reports["audit_log"].line
        assert (reports["consent_events"].rows, reports["consent_events"].legacy_rows) == (4, 3)
        assert (reports["audit_log"].rows, reports["audit_log"].legacy_rows) == (3, 2)

        await conn.execute("ALTER TABLE ingest.consent_events DISABLE TRIGGER USER")
        await conn.execute("UPDATE ingest.consent_events SET granted = true WHERE event_id = 5")
        line = (await _verify(pool))["consent_events"].line
        assert "BROKEN at position 2 (id 5): the row's (legacy SHA-256) hash does not verify" in line
    finally:
        await pool.close()
        await conn.close()


async def test_consent_events_from_before_004_never_had_a_hash_and_are_reported(empty_db):
    conn = await asyncpg.connect(empty_db)
    try:
        await _migrate(conn, 3)
        await conn.execute(
            "INSERT INTO ingest.consent_texts (consent_id, purpose, text, text_sha256)"
            " VALUES ('legacy-v1', 'direct_marketing', 'Yes', $1)",
            TEXT_SHA,
        )
        await _legacy_consent(conn, 1, granted=True)
        await _migrate(conn, 7)
        await _legacy_consent(conn, 2, granted=True)
        await _migrate(conn)
        pool = await asyncpg.create_pool(empty_db, min_size=1, max_size=1)
        try:
            line = (await _verify(pool))["consent_events"].line
        finally:
            await pool.close()
        # The chained row comes first; the row that was never chained is after it, and named.
        assert "BROKEN at position 2 (id 1): the row has no hash" in line, line
    finally:
        await conn.close()


def test_an_anchor_names_a_known_chain_a_position_and_a_hash():
    head = "a" * 64
    assert ledger_verify.parse_anchor(f"consent_events=12:{head}") == ledger_verify.Anchor(
        "consent_events", 12, head
    )
    for bad in ("consent_events=12", f"other=1:{head}", f"audit_log=-1:{head}", "audit_log=1:xyz"):
        with pytest.raises(ValueError, match="CHAIN=POSITION:HASH"):
            ledger_verify.parse_anchor(bad)


def test_audit_details_are_hashed_canonically_and_floats_are_refused():
    assert ledger.canonical_details({"b": 1, "a": "x"}) == '{"a":"x","b":1}'
    with pytest.raises(TypeError):
        ledger.canonical_details({"ratio": 0.5})
