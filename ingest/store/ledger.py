"""The ledgers' chains (consent events, audit log): HMAC-keyed with a secret the database never sees.

Every ledger row holds its position in its chain (`chain_pos`, contiguous from 1), the
hash of the row before it (`prev_hash`, "genesis" for the first) and its own
(`row_hash`): HMAC-SHA256, under a key derived here from INGEST_PEPPER, of a canonical
encoding of the previous hash, the position and every field of the row that never
changes. The key is never sent to the database, not as a setting and not as a
parameter: the database owner, who can disable triggers and edit rows, cannot
recompute the chain. The head (`ingest.chain_heads`) records the last position and hash
with a MAC over both, so a head moved back over a truncated tail does not verify either.

Rows from before migration 008 are the legacy prefix (positions below `keyed_from`),
chained with the plain SHA-256 of migration 004 and verified as before (recomputed in
Python, store/ledger_verify.py); the first keyed row links to their head.

Appending happens inside the caller's transaction: lock the head (after the feed lock,
where the caller takes one; the lock order is feed, consent_events head, audit_log head),
draw the new rows' ids and the time in that same statement, compute the hashes here,
insert the rows with exactly those values, and move the head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest.store.connection import Conn

CHAINS = ("consent_events", "audit_log")
GENESIS = "genesis"
_ROW_TAG = "ingest-ledger-row-v1"
_HEAD_TAG = "ingest-ledger-head-v1"


def chain_key(pepper: str) -> bytes:
    """The chains' HMAC key: derived from the pepper, used only in this process."""
    return hmac.new(pepper.encode("utf-8"), b"ingest ledger chain v1", hashlib.sha256).digest()


def _mac(key: bytes, parts: Sequence[object]) -> str:
    # A JSON array: unambiguous (no separator a field could contain) and stable.
    encoded = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hmac.digest(key, encoded.encode("utf-8"), "sha256").hex()  # one-shot: no HMAC object


def canonical_time(moment: datetime) -> str:
    """A timestamp as the hash covers it: UTC, ISO 8601, microseconds."""
    if moment.tzinfo is None:
        raise ValueError("ledger timestamps must carry a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_details(details: Mapping[str, Any]) -> str:
    """Audit details as the hash covers them: JSON with sorted keys; counts, kinds and flags only.

    Floats are refused: jsonb may print a float back in another form than Python wrote it.
    """
    _check_plain(details)
    return json.dumps(details, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _check_plain(value: object) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("audit detail keys must be strings")
            _check_plain(v)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_plain(item)
    elif value is not None and not isinstance(value, str | int):  # bool is an int
        raise TypeError(f"audit details hold strings, integers and flags, not {type(value).__name__}")


def row_mac(key: bytes, chain: str, position: int, prev_hash: str, fields: Sequence[object]) -> str:
    """The keyed hash of one ledger row."""
    return _mac(key, [_ROW_TAG, chain, position, prev_hash, *fields])


def head_mac(key: bytes, chain: str, position: int, head: str, keyed_from: int) -> str:
    """The MAC of a chain's head: where it ends, and where its keyed part begins."""
    return _mac(key, [_HEAD_TAG, chain, position, head, keyed_from])


def consent_event_fields(
    event_id: int,
    consent_id: str,
    purpose: str,
    granted: bool,
    text_sha256: str,
    source: str,
    notice_version: str | None,
    recorded_at: datetime,
) -> list[object]:
    """What a consent event's hash covers: everything but the links to the person, which erasure unlinks."""
    return [
        event_id,
        consent_id,
        purpose,
        granted,
        text_sha256,
        source,
        notice_version,
        canonical_time(recorded_at),
    ]


def audit_fields(
    audit_id: int, at: datetime, actor: str, action: str, details: Mapping[str, Any]
) -> list[object]:
    """What an audit row's hash covers: all of it."""
    return [audit_id, canonical_time(at), actor, action, canonical_details(details)]


@dataclass(frozen=True, slots=True)
class Opened:
    """A chain's head, locked until COMMIT, with the ids and the time for the rows to append."""

    chain: str
    position: int
    head: str
    keyed_from: int
    ids: list[int]
    now: datetime


@dataclass(frozen=True, slots=True)
class Sealed:
    """The chain columns of the rows to append, and the head they leave."""

    ids: list[int]
    positions: list[int]
    prev_hashes: list[str]
    row_hashes: list[str]
    head_position: int
    head: str
    head_mac: str


# The head row, locked; then the rows' ids, drawn once the lock is held (so ids follow
# chain order); now() is the transaction's time, which the rows are stored with.
_OPEN_CONSENT_EVENTS = """
WITH head AS MATERIALIZED (
    SELECT position, head, keyed_from FROM ingest.chain_heads WHERE chain = 'consent_events' FOR UPDATE
)
SELECT position, head, keyed_from, now() AS now,
       ARRAY(SELECT nextval('ingest.consent_events_event_id_seq') FROM generate_series(1, $1)) AS ids
  FROM head
"""
# The write path takes the feed lock first, in the same round trip (writers and the
# rights functions take the feed lock before a chain's head: no deadlock).
_OPEN_CONSENT_EVENTS_AFTER_FEED = """
WITH feed AS MATERIALIZED (
    SELECT id FROM ingest.feed_lock FOR UPDATE
), head AS MATERIALIZED (
    SELECT h.position, h.head, h.keyed_from
      FROM ingest.chain_heads h, feed WHERE h.chain = 'consent_events' FOR UPDATE OF h
)
SELECT position, head, keyed_from, now() AS now,
       ARRAY(SELECT nextval('ingest.consent_events_event_id_seq') FROM generate_series(1, $1)) AS ids
  FROM head
"""
_OPEN_AUDIT_LOG = """
WITH head AS MATERIALIZED (
    SELECT position, head, keyed_from FROM ingest.chain_heads WHERE chain = 'audit_log' FOR UPDATE
)
SELECT position, head, keyed_from, now() AS now,
       ARRAY(SELECT nextval('ingest.audit_log_audit_id_seq') FROM generate_series(1, $1)) AS ids
  FROM head
"""


async def open_chain(conn: Conn, chain: str, count: int, *, after_feed_lock: bool = False) -> Opened:
    """Lock a chain's head until COMMIT and draw `count` row ids (`after_feed_lock`: feed lock first)."""
    if chain == "consent_events":
        query = _OPEN_CONSENT_EVENTS_AFTER_FEED if after_feed_lock else _OPEN_CONSENT_EVENTS
    elif chain == "audit_log" and not after_feed_lock:
        query = _OPEN_AUDIT_LOG
    else:
        raise ValueError("unknown chain")
    row = await conn.fetchrow(query, count)
    if row is None:
        raise RuntimeError(f"ingest.chain_heads has no row for {chain}")
    return Opened(chain, row["position"], row["head"], row["keyed_from"], list(row["ids"]), row["now"])


def seal(key: bytes, opened: Opened, rows: Sequence[Sequence[object]]) -> Sealed:
    """Chain `rows` (each the covered fields, id first, as `opened.ids` gave them) onto the head."""
    positions, prevs, hashes = [], [], []
    position, head = opened.position, opened.head
    for fields in rows:
        position += 1
        positions.append(position)
        prevs.append(head)
        head = row_mac(key, opened.chain, position, head, fields)
        hashes.append(head)
    return Sealed(
        ids=opened.ids,
        positions=positions,
        prev_hashes=prevs,
        row_hashes=hashes,
        head_position=position,
        head=head,
        head_mac=head_mac(key, opened.chain, position, head, opened.keyed_from),
    )


async def move_head(conn: Conn, chain: str, sealed: Sealed) -> None:
    """Record the chain's new head (the caller holds its lock from `open_chain`)."""
    await conn.execute(
        """
        UPDATE ingest.chain_heads SET position = $2, head = $3, head_mac = $4, updated_at = now()
         WHERE chain = $1
        """,
        chain,
        sealed.head_position,
        sealed.head,
        sealed.head_mac,
    )


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """A consent event to append outside the write path (an objection, a confirmed opt-in)."""

    contact_id: uuid.UUID | None
    consent_id: str
    purpose: str
    granted: bool
    text_sha256: str
    source: str
    notice_version: str | None = None


async def append_consent_events(conn: Conn, key: bytes, events: Sequence[ConsentEvent]) -> int:
    """Append consent events, chained, recorded now; the caller holds the feed lock. Return how many."""
    if not events:
        return 0
    opened = await open_chain(conn, "consent_events", len(events))
    sealed = seal(
        key,
        opened,
        [
            consent_event_fields(
                event_id,
                e.consent_id,
                e.purpose,
                e.granted,
                e.text_sha256,
                e.source,
                e.notice_version,
                opened.now,
            )
            for event_id, e in zip(opened.ids, events, strict=True)
        ],
    )
    await conn.execute(
        """
        INSERT INTO ingest.consent_events
               (event_id, contact_id, consent_id, purpose, granted, text_sha256, source, notice_version,
                recorded_at, chain_pos, prev_hash, row_hash)
        OVERRIDING SYSTEM VALUE
        SELECT i, c, k, p, g, h, s, n, $9, pos, prev, rh
          FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::text[],
                      $7::text[], $8::text[], $10::bigint[], $11::text[], $12::text[])
               AS t(i, c, k, p, g, h, s, n, pos, prev, rh)
        """,
        sealed.ids,
        [e.contact_id for e in events],
        [e.consent_id for e in events],
        [e.purpose for e in events],
        [e.granted for e in events],
        [e.text_sha256 for e in events],
        [e.source for e in events],
        [e.notice_version for e in events],
        opened.now,
        sealed.positions,
        sealed.prev_hashes,
        sealed.row_hashes,
    )
    await move_head(conn, "consent_events", sealed)
    return len(events)


async def append_audit(conn: Conn, key: bytes, actor: str, action: str, details: Mapping[str, Any]) -> None:
    """Append one audit row, chained, recorded now."""
    document = canonical_details(details)
    opened = await open_chain(conn, "audit_log", 1)
    [audit_id] = opened.ids
    sealed = seal(key, opened, [audit_fields(audit_id, opened.now, actor, action, details)])
    await conn.execute(
        """
        INSERT INTO ingest.audit_log (audit_id, at, actor, action, details, chain_pos, prev_hash, row_hash)
        OVERRIDING SYSTEM VALUE
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)
        """,
        audit_id,
        opened.now,
        actor,
        action,
        document,
        sealed.positions[0],
        sealed.prev_hashes[0],
        sealed.row_hashes[0],
    )
    await move_head(conn, "audit_log", sealed)


# --- reading and verifying -------------------------------------------------------------
