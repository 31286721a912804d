"""Chat sessions: pieces of one chat merged until an e-mail or phone is known, then one submission.

A provider delivers a chat in pieces (pre-chat form, messages, a later e-mail). The
pieces wait in the pending store (store/chats.py) keyed by a keyed digest of the
session id, never the provider's id; once a piece brings a contact detail the merged
fields are committed as one submission, and later pieces only fill in what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from datetime import datetime, timedelta

from ingest.config import Config, Source
from ingest.domain import Envelope, Outcome, RawSubmission, Submission
from ingest.pseudonyms import delivery_digest, phone_key
from ingest.store import chats, ledger
from ingest.store.connection import Conn
from ingest.store.submissions import write_submissions

EnvelopeBuilder = Callable[[Source, RawSubmission, Submission, datetime], Envelope]


PENDING_CONSENTS_KEY = "_consents"  # consent answers gathered from earlier chat pieces


def merge_pieces(stored: Mapping[str, object], piece: Submission) -> Submission:
    """Newer name/e-mail/phone win; the first visitor message is kept."""

    def text(key: str) -> str | None:
        value = stored.get(key)
        return value if isinstance(value, str) else None

    return Submission(
        name=piece.name or text("name"),
        email=piece.email or text("email"),
        phone=piece.phone or text("phone"),
        message=text("message") or piece.message,
    )


class ChatSessions:
    """Accepts the pieces of chat sessions, each in the caller's transaction."""

    def __init__(self, config: Config, pepper: str, envelope: EnvelopeBuilder) -> None:
        self.config = config
        self.pepper = pepper
        self.chain_key = ledger.chain_key(pepper)
        self.envelope = envelope

    async def accept_piece(
        self,
        conn: Conn,
        source: Source,
        raw: RawSubmission,
        piece: Submission,
        received_at: datetime,
    ) -> Outcome:
        """Merge one piece of a chat session (in `conn`'s transaction); commit once e-mail/phone is known."""
        assert raw.session_key is not None  # noqa: S101 - accept() routes only session pieces here
        ttl = timedelta(hours=self.config.limits.pending_chat_ttl_hours)
        session = delivery_digest(self.pepper, source.name, raw.session_key)  # never the provider's id
        digest = delivery_digest(self.pepper, source.name, raw.delivery_id) if raw.delivery_id else None
        if digest is not None:
            seen, first = await chats.claim_piece(conn, source.name, digest)
            if seen:
                if first is None:
                    return Outcome("ignored", reason="duplicate_piece")
                return Outcome("duplicate", submission_id=first)
        row = await chats.lock_pending_chat(conn, source.name, session, received_at + ttl)
        if row["submission_id"] is not None:
            if digest is not None:
                await chats.link_piece(conn, source.name, digest, row["submission_id"])
            # Already a submission: a later piece only fills in what is missing.
            if piece.message:
                await chats.fill_submission_message(conn, row["submission_id"], piece.message)
            await chats.update_contact_of_submission(
                conn,
                row["submission_id"],
                piece.name,
                piece.phone,
                phone_key(self.pepper, piece.phone) if piece.phone else None,
                received_at,
            )
            return Outcome("updated", submission_id=row["submission_id"])
        stored = json.loads(row["fields"])
        merged = merge_pieces(stored, piece)
        # A box ticked in an earlier piece counts when the chat is committed.
        consents = {**stored.get(PENDING_CONSENTS_KEY, {}), **raw.consents}
        if merged.email is None and merged.phone is None:
            pending = asdict(merged) | {PENDING_CONSENTS_KEY: consents}
            await chats.save_pending_chat(conn, source.name, session, json.dumps(pending), None)
            return Outcome("ignored", reason="awaiting_contact_details")
        # The piece's delivery id is claimed above: the submission itself carries none.
        piece_raw = replace(raw, consents=consents, delivery_id=None)
        envelope = self.envelope(source, piece_raw, merged, received_at)
        [outcome] = await write_submissions(conn, [envelope], self.chain_key)
        if digest is not None and outcome.submission_id is not None:
            await chats.link_piece(conn, source.name, digest, outcome.submission_id)
        # Keep only the link: the personal pieces now live in the submission.
        await chats.save_pending_chat(conn, source.name, session, "{}", outcome.submission_id)
        return outcome
