"""The mails and waiting grants a batch of new submissions causes, in its transaction.

Mail goes only to the address the contact is stored with (or the same mailbox spelled
otherwise, pseudonyms.same_mailbox): a look-alike that the canonical key folds into a
known contact (`info@strasse.de` for `info@straße.de`) gets no mail, and no grant waits
on it. One confirmation waits per address and consent at a time: posting the form
again does not mail the person again until the first link has lapsed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ingest.domain import Envelope
from ingest.pseudonyms import same_mailbox
from ingest.store import outbox, pending_consents
from ingest.store.connection import Conn
from ingest.store.contacts import contact_key
from ingest.store.subjects import emails_of


async def queue_mail(
    conn: Conn,
    envelopes: Sequence[Envelope],
    new: list[int],
    ids: list[uuid.UUID],
    contacts: dict[str, uuid.UUID],
) -> None:
    """Record the grants waiting for confirmation and queue the mails of the new submissions."""
    with_mail = [i for i in new if envelopes[i].mails and envelopes[i].submission.email]
    if not with_mail:
        return
    stored = await emails_of(conn, [contacts[contact_key(envelopes[i])] for i in with_mail])
    waiting: list[pending_consents.Pending] = []
    mails: list[outbox.Mail] = []
    for i in with_mail:
        env = envelopes[i]
        contact_id = contacts[contact_key(env)]
        address = stored.get(contact_id)
        if address is None or env.email_hash is None or not same_mailbox(address, env.submission.email or ""):
            continue
        for mail in env.mails:
            if mail.kind == "confirm":
                consent_id = mail.consent.consent_id
                if mail.expires_at is None or await pending_consents.exists(
                    conn, env.email_hash, consent_id, env.received_at
                ):
                    continue
                if any(p.email_hash == env.email_hash and p.consent_id == consent_id for p in waiting):
                    continue
                waiting.append(
                    pending_consents.Pending(
                        contact_id=contact_id,
                        submission_id=ids[i],
                        email_hash=env.email_hash,
                        consent_id=consent_id,
                        purpose=mail.consent.purpose,
                        text_sha256=mail.consent.text_sha256,
                        source=env.source,
                        notice_version=env.notice_version,
                        requested_at=env.received_at,
                        expires_at=mail.expires_at,
                    )
                )
            mails.append(
                outbox.Mail(
                    kind=mail.kind,
                    recipient=address,
                    language=env.language,
                    details={
                        "consent_id": mail.consent.consent_id,
                        "text": mail.consent.text,
                        "text_sha256": mail.consent.text_sha256,
                        "source": env.source,
                        "at": env.received_at.isoformat(),
                    },
                    message_id=mail.message_id,
                    contact_id=contact_id,
                )
            )
    await pending_consents.add(conn, waiting)
    await outbox.enqueue(conn, mails)
