"""An outbox row as the mail the person receives: wording, signed links, the receipt's JSON.

Links are signed here, when the mail is composed (the outbox holds no secret), and name
the person only by the keyed hash of their address (ingest/links.py). The Message-ID is
the row's: a mail sent again after a crash is recognisably the same one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from ingest.config import Config
from ingest.links import make_token
from ingest.mail.texts import text
from ingest.pseudonyms import email_key

LOCAL_BASE = "http://127.0.0.1:8080"  # without public_url (a local trial): as the CLI's links
RECEIPT_FILE = "consent-receipt.json"
RECEIPT_SCHEMA = "qualitydesk-ingest/consent-receipt/v1 (fields after ISO/IEC TS 27560:2023)"


def base_url(config: Config) -> str:
    """Where the links in mails point: public_url, else the local trial's address."""
    return (config.public_url or LOCAL_BASE).rstrip("/")


def link(config: Config, path: str, token: str) -> str:
    """An absolute link to one of the service's pages with a signed token."""
    return f"{base_url(config)}{path}?{urlencode({'token': token})}"


def compose(config: Config, pepper: str, row: Any, now: datetime | None = None) -> EmailMessage:
    """The mail of an outbox row (kind, recipient, language, details, message_id)."""
    now = now or datetime.now(UTC)
    details = row["details"] if isinstance(row["details"], dict) else json.loads(row["details"])
    recipient, language, kind = row["recipient"], row["language"], row["kind"]
    controller = config.controller or config.mail.sender.rpartition("@")[2]
    key = email_key(pepper, recipient)
    message = EmailMessage()
    local, _, domain = config.mail.sender.rpartition("@")
    message["From"] = Address(config.controller or "", local, domain)
    message["To"] = recipient
    message["Date"] = format_datetime(now)
    message["Message-ID"] = row["message_id"]
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    if kind == "confirm":
        days = config.limits.confirm_link_days
        # Issued when the grant was asked for, not when the mail leaves: an objection made
        # while the mail waited is later than the link, so the link cannot lift it.
        asked = datetime.fromisoformat(details["at"])
        token = make_token(pepper, "confirm", key, asked, days=days, consent_id=details["consent_id"])
        message["Subject"] = text(language, "confirm_subject", controller=controller)
        body = text(
            language,
            "confirm_body",
            controller=controller,
            consent_text=details["text"],
            link=link(config, "/v1/confirm", token),
            days=str(days),
        )
        message.set_content(body)
    elif kind == "receipt":
        unsubscribe = link(
            config,
            "/v1/unsubscribe",
            make_token(pepper, "unsubscribe", key, now, days=config.limits.unsubscribe_link_days),
        )
        access = f"{base_url(config)}/v1/access"
        message["Subject"] = text(language, "receipt_subject", controller=controller)
        # RFC 8058 one-click unsubscribe, as the receipt is about a marketing consent.
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(
            text(
                language,
                "receipt_body",
                controller=controller,
                contact=config.mail.contact or config.mail.sender,
                consent_text=details["text"],
                granted_at=details["at"],
                source=details["source"],
                unsubscribe_link=unsubscribe,
                access_link=access,
            )
        )
        receipt = receipt_document(config, row["message_id"], recipient, details, unsubscribe, access)
        message.add_attachment(
            json.dumps(receipt, indent=2, ensure_ascii=False).encode("utf-8"),
            maintype="application",
            subtype="json",
            filename=RECEIPT_FILE,
        )
    elif kind == "access":
        minutes = config.mail.access_link_minutes
        token = make_token(pepper, "access", key, now, days=minutes / 1440)
        message["Subject"] = text(language, "access_subject", controller=controller)
        message.set_content(
            text(
                language,
                "access_body",
                controller=controller,
                link=link(config, "/v1/access/view", token),
                minutes=str(minutes),
            )
        )
    else:
        raise ValueError(f"unknown mail kind {kind!r}")
    message["Content-Language"] = language  # after the content: set_content replaces Content-*
    return message


def receipt_document(
    config: Config, record_id: str, recipient: str, details: dict[str, Any], unsubscribe: str, access: str
) -> dict[str, Any]:
    """The machine-readable receipt: ISO/IEC TS 27560 consent-record fields, where they fit."""
    consent = config.consents.get(details["consent_id"])
    marketing = consent is not None and consent.purpose == "direct_marketing"
    return {
        "schema": RECEIPT_SCHEMA,
        "record_id": record_id.strip("<>"),
        "controller": {"name": config.controller, "contact": config.mail.contact or config.mail.sender},
        "data_subject": {"email": recipient},
        "notice": {"version": config.notice_version, "url": config.notice_url},
        "purpose": consent.purpose if consent else None,
        "processing": "direct marketing by e-mail" if marketing else None,
        "consent": {
            "id": details["consent_id"],
            "text": details["text"],
            "text_sha256": details["text_sha256"],
            "given_at": details["at"],
            "collected_through": details["source"],
            "state": "given",
            "explicit": True,
        },
        "withdrawal": {"method": "one-click link", "url": unsubscribe},
        "access": {"url": access},
    }
