"""Which mails a submission causes, decided when its envelope is built (pure).

A grant of a double opt-in consent (config `double_opt_in`) from a source that cannot
vouch for the address (Source.double_opt_in, on for html) is not recorded: it waits
for the person to confirm it by a mailed link, and the CRM sees no grant until then.
Every grant that is recorded gets a receipt, where the submission has an e-mail
address and [mail] receipts is on.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from ingest.config import Config, Source
from ingest.domain import ConsentDecision, MailIntent, Submission


def message_id(config: Config) -> str:
    """A new Message-ID in the sender's domain: fixed when the mail is queued, so a re-send shows."""
    domain = config.mail.sender.rpartition("@")[2]
    return f"<{uuid.uuid4().hex}@{domain}>"


def plan(
    config: Config,
    source: Source,
    submission: Submission,
    decisions: tuple[ConsentDecision, ...],
    received_at: datetime,
) -> tuple[tuple[ConsentDecision, ...], tuple[ConsentDecision, ...], tuple[MailIntent, ...]]:
    """Split the decisions into those recorded now and the grants awaiting confirmation; the mails."""
    recorded, waiting, mails = [], [], []
    lifetime = timedelta(days=config.limits.confirm_link_days)
    for decision in decisions:
        confirm = (
            decision.granted and source.double_opt_in and decision.consent.consent_id in config.double_opt_in
        )
        if not confirm:
            recorded.append(decision)
            if decision.granted and submission.email and config.mail.receipts:
                mails.append(MailIntent("receipt", decision.consent, message_id(config)))
        elif submission.email:
            waiting.append(decision)
            mails.append(
                MailIntent("confirm", decision.consent, message_id(config), expires_at=received_at + lifetime)
            )
        # A grant that needs confirming, with no address to confirm it by: not granted.
    return tuple(recorded), tuple(waiting), tuple(mails)
