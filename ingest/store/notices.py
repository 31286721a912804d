"""Legitimate-interest notices shown with a submission (sql/009_notices.sql): one set-based INSERT."""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Sequence
from datetime import datetime

from ingest.domain import Notice
from ingest.store.connection import Conn


async def insert_notices(
    conn: Conn, rows: Sequence[tuple[uuid.UUID, Notice]], shown_at: Sequence[datetime]
) -> None:
    """Record each (submission, notice) with its words verbatim, in the caller's transaction.

    `shown_at[i]` is when the submission of `rows[i]` was received. Erased with the submission.
    """
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO ingest.submission_notices
               (submission_id, purpose, lawful_basis, provider_basis, subscription_type_id,
                applies, text, text_sha256, shown_at)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::boolean[], $7::text[], $8::text[], $9::timestamptz[])
        """,
        [submission_id for submission_id, _ in rows],
        [n.purpose for _, n in rows],
        [n.lawful_basis for _, n in rows],
        [n.provider_basis for _, n in rows],
        [n.subscription_type_id for _, n in rows],
        [n.applies for _, n in rows],
        [n.text for _, n in rows],
        [text_sha256(n.text) for _, n in rows],
        list(shown_at),
    )


def text_sha256(text: str) -> str:
    """SHA-256 of the NFC form of the words, as consent texts are hashed (config.consent_text)."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()
