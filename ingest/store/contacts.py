"""The contact upsert: who a submission is about, found or created, set-based for a whole batch.

The contact identity rules live here, and only here:

- A contact is keyed by the canonical e-mail key (`pseudonyms.canonical_email`), or,
  for a submission without an e-mail, by its phone number.
- A submission that gives only a phone joins only a contact known by that phone
  alone, never a contact keyed by an e-mail: a phone typed next to somebody's
  address proves nothing about who owns it.
- A source that authenticates its deliveries (a signed provider or partner) updates
  a known contact's name and phone, the newest winning. A browser form, which
  anybody can post, never changes them: what it said stays on its own submission
  (`submissions.name/email/phone`, `crm.submissions`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ingest.domain import Envelope
from ingest.pseudonyms import canonical_email
from ingest.store.connection import Conn


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    """What authenticated submissions in the batch say about a known contact's name and phone."""

    contact_id: uuid.UUID
    name: str | None
    phone: str | None
    phone_hash: bytes | None


def contact_key(env: Envelope) -> str:
    """Which contact a submission belongs to: `e:<canonical e-mail>`, else `p:<E.164 phone>`."""
    data = env.submission
    return f"e:{canonical_email(data.email)}" if data.email else f"p:{data.phone}"


@dataclass(slots=True)
class _People:
    """The batch per person: who creates the contact, when last seen, what authenticated sources said."""

    first: dict[str, Envelope] = field(default_factory=dict)
    seen: dict[str, datetime] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # the newest name an authenticated source gave
    phones: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)  # and its keyed hash


def _people(envelopes: list[Envelope]) -> _People:
    people = _People()
    for env in envelopes:
        key = contact_key(env)
        people.first.setdefault(key, env)
        people.seen[key] = max(people.seen.get(key, env.received_at), env.received_at)
        if env.authenticated:
            if env.submission.name:
                people.names[key] = env.submission.name
            if env.submission.phone and key.startswith("e:"):
                people.phones[key] = (env.submission.phone, env.phone_hash)
    return people


async def upsert_contacts(
    conn: Conn, envelopes: list[Envelope]
) -> tuple[dict[str, uuid.UUID], list[ContactUpdate]]:
    """One row per person in the batch, found or created; and the updates authenticated sources make.

    The keyed hashes come with the envelopes (computed where they are built).
    """
    people = _people(envelopes)
    ids, created = await _find_or_create(conn, people)
    updates = []
    for key in people.names.keys() | people.phones.keys():
        name = people.names.get(key)
        phone, phone_hash = people.phones.get(key, (None, None))
        made = people.first[key].submission
        if key in created and name in (None, made.name) and phone in (None, made.phone):
            continue  # the contact was just created with these very values
        updates.append(ContactUpdate(ids[key], name, phone, phone_hash))
    return ids, updates


async def _find_or_create(conn: Conn, people: _People) -> tuple[dict[str, uuid.UUID], set[str]]:
    """Contact id per person key, and the keys whose contact this batch created."""
    first, seen = people.first, people.seen
    by_email = [k for k in first if k.startswith("e:")]
    by_phone = [k for k in first if k.startswith("p:")]
    found: list[tuple[str, uuid.UUID, bool]] = []
    if by_email:
        rows = await upsert_contacts_by_email(
            conn,
            [first[k].submission.name for k in by_email],
            [first[k].submission.email or "" for k in by_email],
            [k[2:] for k in by_email],
            [first[k].submission.phone for k in by_email],
            [_required(first[k].email_hash) for k in by_email],
            [first[k].phone_hash for k in by_email],
            [seen[k] for k in by_email],
        )
        found += [(f"e:{key}", contact_id, is_new) for key, contact_id, is_new in rows]
    if by_phone:
        rows = await upsert_contacts_by_phone(
            conn,
            [first[k].submission.name for k in by_phone],
            [k[2:] for k in by_phone],
            [_required(first[k].phone_hash) for k in by_phone],
            [seen[k] for k in by_phone],
        )
        found += [(f"p:{phone}", contact_id, is_new) for phone, contact_id, is_new in rows]
    return {key: contact_id for key, contact_id, _ in found}, {key for key, _, is_new in found if is_new}


def _required(key: bytes | None) -> bytes:
    if key is None:  # an envelope not built by the service: refuse rather than store no key
        raise ValueError("an envelope without its keyed hash")
    return key


async def upsert_contacts_by_email(
    conn: Conn,
    names: Sequence[str | None],
    emails: Sequence[str],
    keys: Sequence[str],
    phones: Sequence[str | None],
    email_hashes: Sequence[bytes],
    phone_hashes: Sequence[bytes | None],
    seen: Sequence[datetime],
) -> list[tuple[str, uuid.UUID, bool]]:
    """Find or create contacts by e-mail key; (key, contact id, created) each.

    A known contact keeps its name and phone here (authenticated updates come later,
    in `insert_rows`); only `last_seen_at` moves.
    """
    rows = await conn.fetch(
        """
        INSERT INTO ingest.contacts AS c
               (name, email, email_key, phone, email_hash, phone_hash, first_seen_at, last_seen_at)
        SELECT n, e, k, p, eh, ph, s, s
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[],
                      $7::timestamptz[]) AS t(n, e, k, p, eh, ph, s)
        ON CONFLICT (email_key) WHERE email_key IS NOT NULL DO UPDATE
           SET last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING email_key, contact_id, xmax = 0 AS created
        """,
        names,
        emails,
        keys,
        phones,
        email_hashes,
        phone_hashes,
        seen,
    )
    return [(r["email_key"], r["contact_id"], r["created"]) for r in rows]


async def upsert_contacts_by_phone(
    conn: Conn,
    names: Sequence[str | None],
    phones: Sequence[str],
    phone_hashes: Sequence[bytes],
    seen: Sequence[datetime],
) -> list[tuple[str, uuid.UUID, bool]]:
    """Find or create the phone-only contact of each phone; (phone, contact id, created) each."""
    rows = await conn.fetch(
        """
        INSERT INTO ingest.contacts AS c (name, phone, phone_hash, first_seen_at, last_seen_at)
        SELECT n, p, ph, s, s
          FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[]) AS t(n, p, ph, s)
        ON CONFLICT (phone) WHERE email IS NULL DO UPDATE
           SET last_seen_at = GREATEST(c.last_seen_at, EXCLUDED.last_seen_at)
        RETURNING phone, contact_id, xmax = 0 AS created
        """,
        names,
        phones,
        phone_hashes,
        seen,
    )
    return [(r["phone"], r["contact_id"], r["created"]) for r in rows]
