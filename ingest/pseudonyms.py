"""One canonical e-mail key, and keyed hashes of e-mail and phone so a suppression outlives erasure."""

from __future__ import annotations

import hmac
import unicodedata

import idna


def canonical_email(email: str) -> str:
    """The one key of an e-mail address: NFKC, Unicode case folding, NFKC again.

    Decided once, in Python, and used for de-duplication, export, erasure and
    suppression alike: `ΣΑΣ@example.gr` and `σας@example.gr` are one person, and so
    are `ÄIJÄ@` and `äijä@` on a database whose LC_CTYPE is C, and an address written
    with compatibility characters (fullwidth letters) is the address it stands for.
    Folding merges a few addresses a mail server might keep apart (`Straße@` and
    `strasse@`): for a person's rights, one key per way of writing is the safe side.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).casefold())


def same_mailbox(first: str, second: str) -> bool:
    """Whether two addresses name one mailbox, as a mail server would route them.

    Stricter than the canonical key, which folds look-alikes together for the person's
    rights (`info@straße.de` and `info@strasse.de`, two domains): mail goes only to the
    address a contact was stored with, or one that is the same mailbox, never to a
    look-alike. The domain compares by its IDNA 2008 form, the local part case-blind.
    """
    local_a, _, domain_a = first.rpartition("@")
    local_b, _, domain_b = second.rpartition("@")
    if local_a.lower() != local_b.lower():
        return False
    try:
        return bool(idna.encode(domain_a, uts46=True) == idna.encode(domain_b, uts46=True))
    except idna.IDNAError:
        return domain_a.lower() == domain_b.lower()


def keyed_hash(pepper: str, kind: str, value: str) -> bytes:
    """HMAC-SHA256(pepper, kind:value): unlinkable without the pepper, stable with it."""
    return hmac.digest(pepper.encode("utf-8"), f"{kind}:{value}".encode(), "sha256")  # one-shot


def email_key(pepper: str, email: str) -> bytes:
    """The suppression key of an e-mail address (of its canonical key)."""
    return keyed_hash(pepper, "email", canonical_email(email))


def legacy_email_key(pepper: str, email: str) -> bytes | None:
    """The key objections recorded before migration 005 carry (`str.lower()`), if it differs."""
    old = keyed_hash(pepper, "email", email.lower())
    return None if old == email_key(pepper, email) else old


def phone_key(pepper: str, phone: str) -> bytes:
    """The suppression key of an E.164 phone number."""
    return keyed_hash(pepper, "phone", phone)


def delivery_digest(pepper: str, source: str, delivery_id: str) -> str:
    """What is stored of a provider's delivery or session id: a keyed digest, `k1:<hex>`.

    Crisp session ids, LiveChat chat ids and the like map back to the person at the
    provider; after an erasure only this digest remains, which nobody can map back
    without the pepper, and a redelivery still finds its first submission.
    """
    return "k1:" + keyed_hash(pepper, "delivery", f"{source}\x00{delivery_id}").hex()
