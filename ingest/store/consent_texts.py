"""The consent texts table: each wording stored once under its id, never changed."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.config import consent_text
from ingest.domain import ConsentText
from ingest.store.connection import Conn


async def ensure_consent_texts(conn: Conn, texts: Sequence[ConsentText]) -> list[str]:
    """Store consent texts once; return the ids whose stored wording differs."""
    rows = await conn.fetch(
        """
        WITH given AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                       AS g(consent_id, purpose, text, text_sha256)
        ), inserted AS (
            INSERT INTO ingest.consent_texts (consent_id, purpose, text, text_sha256)
            SELECT consent_id, purpose, text, text_sha256 FROM given
            ON CONFLICT (consent_id) DO NOTHING
        )
        SELECT g.consent_id
          FROM given g JOIN ingest.consent_texts t USING (consent_id)
         WHERE t.text_sha256 <> g.text_sha256 OR t.purpose <> g.purpose
        """,
        [t.consent_id for t in texts],
        [t.purpose for t in texts],
        [t.text for t in texts],
        [t.text_sha256 for t in texts],
    )
    return [row["consent_id"] for row in rows]


OBJECTION_CONSENT_ID = "objection-direct-marketing"


OBJECTION_TEXT = "The person objected to direct marketing (GDPR Art. 21(2)); consent withdrawn."


async def ensure_objection_text(conn: Conn) -> str:
    """The consent text id recorded when someone objects (stored once); return its hash."""
    objection = consent_text(OBJECTION_CONSENT_ID, "direct_marketing", OBJECTION_TEXT)
    await ensure_consent_texts(conn, [objection])
    return objection.text_sha256
