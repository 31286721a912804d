"""The [mail] table and the per-consent double opt-in: how mail reaches the person."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

from ingest.config.model import ERASURE_MODES, SMTP_SECURITY, MailSettings
from ingest.config.reader import Reader
from ingest.errors import ConfigError
from ingest.mail.texts import LANGUAGES

# A plain addr-spec for From: (no display name, no comments): what a header can carry safely.
_LOCAL = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
_HOST = re.compile(rf"^{_DOMAIN}$")
_ACCESS_MINUTES = (5, 24 * 60)
_DEFAULT = MailSettings()


def parse_mail(table: Reader, environ: Mapping[str, str]) -> MailSettings:
    """Validate [mail]; the SMTP password comes only from the variable smtp_password_env names."""
    sender = table.get("from", str, _DEFAULT.sender)
    if not _ADDRESS.fullmatch(sender):
        raise ConfigError(f"{table.key('from')}: an e-mail address (name@domain)")
    contact = table.get("contact", str, None)
    if contact is not None and not (0 < len(contact.strip()) <= 200 and contact.isprintable()):  # noqa: PLR2004
        raise ConfigError(f"{table.key('contact')}: an address, URL or phone, 1 to 200 printable characters")
    language = _one_of(table, "language", _DEFAULT.language, LANGUAGES)
    low, high = _ACCESS_MINUTES
    minutes = table.get("access_link_minutes", int, _DEFAULT.access_link_minutes)
    if not low <= minutes <= high:
        raise ConfigError(f"{table.key('access_link_minutes')}: from {low} to {high}")
    settings = MailSettings(
        sender=sender,
        contact=cast("str | None", contact),
        language=language,
        receipts=table.get("receipts", bool, True),
        access_link_minutes=minutes,
        erasure=_one_of(table, "erasure", _DEFAULT.erasure, ERASURE_MODES),
        directory=cast("str | None", table.get("directory", str, None)),
        poll_seconds=_seconds(table, "poll_seconds", _DEFAULT.poll_seconds, (0.05, 60)),
        lease_seconds=_seconds(table, "lease_seconds", _DEFAULT.lease_seconds, (1, 3600)),
        first_retry_seconds=_seconds(table, "first_retry_seconds", _DEFAULT.first_retry_seconds, (0.1, 3600)),
        **_smtp(table, environ),
    )
    table.reject_unknown()
    return settings


def _smtp(table: Reader, environ: Mapping[str, str]) -> dict[str, Any]:
    host = table.get("smtp_host", str, None)
    if host is not None and not _HOST.fullmatch(host):
        raise ConfigError(f"{table.key('smtp_host')}: a host name or address")
    port = table.get("smtp_port", int, _DEFAULT.smtp_port)
    if not 0 < port < 65536:  # noqa: PLR2004
        raise ConfigError(f"{table.key('smtp_port')}: a TCP port")
    security = _one_of(table, "smtp_security", _DEFAULT.smtp_security, SMTP_SECURITY)
    username = table.get("smtp_username", str, None)
    password_env = table.get("smtp_password_env", str, None)
    if (username is None) != (password_env is None):
        raise ConfigError(f"{table.key('smtp_username')}: smtp_username and smtp_password_env go together")
    password = environ.get(password_env) or None if password_env is not None else None
    if password_env is not None and password is None:
        raise ConfigError(f"{table.key('smtp_password_env')}: {password_env} is not set")
    if password is not None and security == "none":
        raise ConfigError(f"{table.key('smtp_security')}: a password is never sent without TLS")
    return {
        "smtp_host": host,
        "smtp_port": port,
        "smtp_security": security,
        "smtp_username": username,
        "smtp_password": password,
    }


def _seconds(table: Reader, key: str, default: float, bounds: tuple[float, float]) -> float:
    value = float(table.get(key, (int, float), default))
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{table.key(key)}: from {bounds[0]} to {bounds[1]} seconds")
    return value


def _one_of(table: Reader, key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = cast("str", table.get(key, str, default))
    if value not in allowed:
        raise ConfigError(f"{table.key(key)}: one of {', '.join(allowed)}")
    return value


def double_opt_in(item: Reader, purpose: str) -> bool:
    """[consents.X] double_opt_in: on by default for direct marketing."""
    return bool(item.get("double_opt_in", bool, purpose == "direct_marketing"))
