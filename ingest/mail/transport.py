"""How a mail leaves the service: over SMTP (aiosmtplib), or into a directory when no SMTP is configured.

Errors say what kind of failure it was (the exception type and the SMTP code), never an address or the
server's reply text: both may end up in logs and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.policy
import hashlib
import os
import pathlib
import re
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Protocol

import aiosmtplib

SECURITY_MODES: tuple[str, ...] = ("starttls", "tls", "none")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 150  # the whole file name, ".eml" included
_HASH_CHARS = 16  # of the SHA-256 of the Message-ID, so distinct ids never share a file


class TransportError(Exception):
    """Handing a message over failed; trying again later may work. The text is the error's kind only."""


class PermanentFailure(TransportError):
    """The server refused the recipient (or the message) for good: an SMTP 5xx on RCPT or DATA."""


class Transport(Protocol):
    """Something that hands a finished message over for delivery."""

    name: str  # "smtp" or "files", for logs and metrics

    async def send(self, message: email.message.EmailMessage) -> None:
        """Hand the message over; raise TransportError (retryable) or PermanentFailure on failure."""
        ...


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP server."""

    host: str
    port: int = 587
    security: str = "starttls"  # "starttls" | "tls" (implicit TLS, port 465) | "none" (a local relay)
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # from the environment, never from a file
    timeout_seconds: float = 30.0
    ca_file: str | None = None  # a private CA; None: the system's trust store
    local_hostname: str | None = None


def _smtp_code(exc: aiosmtplib.SMTPException) -> int | None:
    """The SMTP reply code an aiosmtplib error carries, if any (the worst one of refused recipients)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        return max(codes) if codes else None
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code
    return None


def _failure(exc: BaseException) -> TransportError:
    """The TransportError (or PermanentFailure) for an exception: its type and SMTP code only."""
    kind = type(exc).__name__
    if not isinstance(exc, aiosmtplib.SMTPException):
        return TransportError(kind)
    code = _smtp_code(exc)
    text = kind if code is None else f"{kind} {code}"
    refusals = (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # Permanent only if every recipient was refused for good; a 4xx among them is worth a retry.
        if exc.recipients and all(refused.code >= 500 for refused in exc.recipients):  # noqa: PLR2004
            return PermanentFailure(text)
        return TransportError(text)
    if isinstance(exc, refusals) and code is not None and code >= 500:  # noqa: PLR2004
        return PermanentFailure(text)
    return TransportError(text)


class SmtpTransport:
    """Sends each message over its own SMTP connection; certificates and host names are always verified."""

    name = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        if settings.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}")
        if settings.security == "none" and settings.username is not None:
            raise ValueError("SMTP credentials are never sent without TLS")
        if settings.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._settings = settings
        self._tls_context: ssl.SSLContext | None = None
        if settings.security != "none":
            context = ssl.create_default_context(cafile=settings.ca_file)  # verifies cert and host name
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls_context = context

    async def send(self, message: email.message.EmailMessage) -> None:
        """Send the message; TransportError (retryable) or PermanentFailure (5xx on RCPT/DATA) on failure."""
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            local_hostname=settings.local_hostname,
            # No timeouts of aiosmtplib's own: they use asyncio.wait_for, which on Python
            # 3.11 can drop a connection it has just made when its timer fires at that
            # moment (the transport is then left to the garbage collector). The whole
            # exchange is bounded below by one asyncio.timeout, which cancels cleanly.
            timeout=None,
            use_tls=settings.security == "tls",
            # True: refuse to go on in clear when the server offers no STARTTLS.
            start_tls=settings.security == "starttls",
            validate_certs=True,
            tls_context=self._tls_context,
        )
        try:
            async with asyncio.timeout(settings.timeout_seconds):
                await client.connect()
                if settings.username is not None:
                    await client.login(settings.username, settings.password or "")
                refused, _ = await client.send_message(message)
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.quit()
        except (aiosmtplib.SMTPException, OSError) as exc:  # OSError: refused, reset, TLS, timeouts
            raise _failure(exc) from None  # the cause's text may name the recipient
        finally:
            await _closed(client)  # on every path: no connection left for the garbage collector
        if refused:
            # Some recipients accepted, some refused (a mail here has one): judged by the refused codes,
            # so a retry after a 4xx would send the accepted ones a second copy.
            errors = [aiosmtplib.SMTPRecipientRefused(code, "", "") for code, _ in refused.values()]
            raise _failure(aiosmtplib.SMTPRecipientsRefused(errors))


async def _closed(client: aiosmtplib.SMTP) -> None:
    """Close the client's connection now, and let the loop finish closing it.

    A transport closes its socket on the loop's next turn; aborted (nothing of ours is
    left to send: QUIT has been answered, or the exchange failed), a TLS one too, without
    waiting for the peer. One turn later the socket is closed, even if the loop then stops.
    """
    transport = client.transport
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        transport.abort()
    client.close()
    await asyncio.sleep(0)


def _file_name(message_id: str) -> str:
    """A file name for a Message-ID: stable, of [A-Za-z0-9._-] only, at most 150 characters."""
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_CHARS]
    readable = _UNSAFE.sub("_", message_id.strip().strip("<>")).lstrip(".")
    readable = readable[: _MAX_NAME - len(digest) - len("-.eml")]
    return f"{readable}-{digest}.eml" if readable else f"{digest}.eml"


class FileTransport:
    """Writes each message to <directory>/<name from its Message-ID>.eml: the default with no SMTP."""

    name = "files"

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path_for(self, message: email.message.EmailMessage) -> pathlib.Path:
        """Where the message is written; ValueError when it has no Message-ID."""
        message_id = message.get("Message-ID")
        if message_id is None or not str(message_id).strip():
            raise ValueError("the message has no Message-ID")
        return self.directory / _file_name(str(message_id))

    async def send(self, message: email.message.EmailMessage) -> None:
        """Write the message atomically (mode 0o600); a re-send of it overwrites the same file."""
        path = self.path_for(message)
        data = message.as_bytes(policy=email.policy.SMTP)
        await asyncio.to_thread(self._write, path, data)

    def _write(self, path: pathlib.Path, data: bytes) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as file:  # mkstemp opens it with mode 0o600
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            pathlib.Path(temporary).replace(path)
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
