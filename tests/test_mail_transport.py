"""The mail transports against a real aiosmtpd server on 127.0.0.1, and the file transport."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingest.mail.transport import (
    FileTransport,
    PermanentFailure,
    SmtpSettings,
    SmtpTransport,
    Transport,
    TransportError,
)

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
SENDER = "noreply@desk.example"
RECIPIENT = "maija.meikalainen@example.fi"


class Handler:
    """Stores the envelopes it receives; answers RCPT with `rcpt_reply` when set."""

    def __init__(self, rcpt_reply: str | None = None, refuse: str | None = None) -> None:
        self.envelopes: list[Any] = []
        self.rcpt_reply = rcpt_reply
        self.refuse = refuse  # refuse only this address (with rcpt_reply)

    async def handle_RCPT(self, _server, _session, envelope, address, _options):  # noqa: N802
        """Accept the recipient, or answer rcpt_reply."""
        if self.rcpt_reply is not None and self.refuse in {None, address}:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server, _session, envelope):  # noqa: N802
        """Store the envelope."""
        self.envelopes.append(envelope)
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A private CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    directory = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test CA"))
        .issuer_name(_name("Test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def server_tls(pki: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["cert"], pki["key"])
    return context


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"desk", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtpd() -> Iterator[Any]:
    """A starter of servers on free ports, taking a handler and SMTP parameters; all stopped afterwards."""
    started: list[Controller] = []

    def start(handler: Handler, **kwargs: Any) -> int:
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, **kwargs)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def make_message(message_id: str | None = "<m1.abc@desk.example>") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RECIPIENT
    message["Subject"] = "Vahvista tilaus: ääkköset"
    if message_id is not None:
        message["Message-ID"] = message_id
    message.set_content("Hei,\n\navaa linkki: https://desk.example/c/abc\n")
    return message


def received(handler: Handler) -> EmailMessage:
    (envelope,) = handler.envelopes
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == [RECIPIENT]
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)  # type: ignore[return-value]


def assert_intact(got: EmailMessage) -> None:
    sent = make_message()
    for header in ("From", "To", "Subject", "Message-ID"):
        assert got[header] == sent[header]
    assert got.get_content().replace("\r\n", "\n") == sent.get_content()  # SMTP policy: CRLF lines


def check_text(exc: BaseException) -> None:
    text = f"{exc} {exc!r}"
    assert RECIPIENT not in text
    assert "maija" not in text
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__  # tracebacks show no address either


def test_transports_fit_the_protocol(tmp_path: Path) -> None:
    transports: list[Transport] = [SmtpTransport(SmtpSettings(host=HOST)), FileTransport(tmp_path / "out")]
    assert [t.name for t in transports] == ["smtp", "files"]
    assert "hunter2" not in repr(SmtpSettings(host=HOST, username="u", password="hunter2"))
    with pytest.raises(ValueError, match="security"):
        SmtpTransport(SmtpSettings(host=HOST, security="ssl"))
    with pytest.raises(ValueError, match="without TLS"):
        SmtpTransport(SmtpSettings(host=HOST, security="none", username="u", password="p"))


async def test_plain_relay_delivers(smtpd) -> None:
    handler = Handler()
    port = smtpd(handler)
    await SmtpTransport(SmtpSettings(host=HOST, port=port, security="none", timeout_seconds=5)).send(
        make_message()
    )
    assert_intact(received(handler))


async def test_starttls_with_private_ca_delivers(smtpd, pki) -> None:
    handler = Handler()
    port = smtpd(handler, tls_context=server_tls(pki), require_starttls=True)
    settings = SmtpSettings(host=HOST, port=port, ca_file=str(pki["ca"]), timeout_seconds=5)
    await SmtpTransport(settings).send(make_message())
    assert_intact(received(handler))


async def test_implicit_tls_with_private_ca_delivers(smtpd, pki) -> None:
    handler = Handler()
    port = smtpd(handler, ssl_context=server_tls(pki))
    settings = SmtpSettings(host=HOST, port=port, security="tls", ca_file=str(pki["ca"]), timeout_seconds=5)
    await SmtpTransport(settings).send(make_message())
    assert_intact(received(handler))


async def test_untrusted_certificate_fails_and_sends_nothing(smtpd, pki) -> None:
    handler = Handler()
    port = smtpd(handler, tls_context=server_tls(pki))  # STARTTLS offered, not required: clear would work
    with pytest.raises(TransportError) as caught:
        await SmtpTransport(SmtpSettings(host=HOST, port=port, timeout_seconds=5)).send(make_message())
    assert not isinstance(caught.value, PermanentFailure)
    assert "SSLCertVerificationError" in str(caught.value)
    check_text(caught.value)
    assert handler.envelopes == []


async def test_starttls_required_but_not_offered(smtpd) -> None:
    handler = Handler()
    port = smtpd(handler)
    with pytest.raises(TransportError) as caught:
        await SmtpTransport(SmtpSettings(host=HOST, port=port, timeout_seconds=5)).send(make_message())
    check_text(caught.value)
    assert handler.envelopes == []


@pytest.mark.parametrize(("password", "delivered"), [("s3cret", True), ("wrong", False)])
async def test_auth_over_starttls(smtpd, pki, password: str, delivered: bool) -> None:
    handler = Handler()
    port = smtpd(handler, tls_context=server_tls(pki), authenticator=authenticator, auth_require_tls=True)
    settings = SmtpSettings(
        host=HOST, port=port, username="desk", password=password, ca_file=str(pki["ca"]), timeout_seconds=5
    )
    if delivered:
        await SmtpTransport(settings).send(make_message())
        assert_intact(received(handler))
        return
    with pytest.raises(TransportError) as caught:
        await SmtpTransport(settings).send(make_message())
    assert not isinstance(caught.value, PermanentFailure)  # a wrong password is not the recipient's fault
    assert str(caught.value) == "SMTPAuthenticationError 535"
    check_text(caught.value)
    assert handler.envelopes == []


async def test_recipient_refused_for_good(smtpd) -> None:
    port = smtpd(Handler(rcpt_reply=f"550 5.1.1 <{RECIPIENT}>: no such user"))
    with pytest.raises(PermanentFailure) as caught:
        await SmtpTransport(SmtpSettings(host=HOST, port=port, security="none", timeout_seconds=5)).send(
            make_message()
        )
    assert str(caught.value) == "SMTPRecipientsRefused 550"
    check_text(caught.value)


async def test_recipient_refused_for_now(smtpd) -> None:
    port = smtpd(Handler(rcpt_reply=f"451 4.3.0 <{RECIPIENT}>: try again later"))
    with pytest.raises(TransportError) as caught:
        await SmtpTransport(SmtpSettings(host=HOST, port=port, security="none", timeout_seconds=5)).send(
            make_message()
        )
    assert not isinstance(caught.value, PermanentFailure)
    assert str(caught.value) == "SMTPRecipientsRefused 451"
    check_text(caught.value)


async def test_some_recipients_refused_for_good(smtpd) -> None:
    handler = Handler(rcpt_reply="550 5.1.1 no such user", refuse=RECIPIENT)
    port = smtpd(handler)
    message = make_message()
    message["Cc"] = "other@example.fi"
    with pytest.raises(PermanentFailure) as caught:
        await SmtpTransport(SmtpSettings(host=HOST, port=port, security="none", timeout_seconds=5)).send(
            message
        )
    assert str(caught.value) == "SMTPRecipientsRefused 550"
    check_text(caught.value)
    (envelope,) = handler.envelopes  # the accepted recipient got it: a retry would duplicate it
    assert envelope.rcpt_tos == ["other@example.fi"]


async def test_connection_refused_fails_within_timeout() -> None:
    transport = SmtpTransport(SmtpSettings(host=HOST, port=free_port(), security="none", timeout_seconds=3))
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        await transport.send(make_message())
    assert time.monotonic() - started < 3
    assert not isinstance(caught.value, PermanentFailure)
    check_text(caught.value)


async def test_silent_server_fails_within_timeout() -> None:
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _reader, writer: writers.append(writer), HOST, 0)  # mute
    port = server.sockets[0].getsockname()[1]
    transport = SmtpTransport(SmtpSettings(host=HOST, port=port, security="none", timeout_seconds=0.5))
    started = time.monotonic()
    async with server:
        with pytest.raises(TransportError) as caught:
            await transport.send(make_message())
        for writer in writers:
            writer.close()
            await writer.wait_closed()
    assert 0.4 < time.monotonic() - started < 3
    assert "Timeout" in str(caught.value)
    check_text(caught.value)


async def test_file_transport_writes_one_file_per_message_id(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    transport = FileTransport(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    await transport.send(make_message())
    await transport.send(make_message())  # a re-send overwrites
    (path,) = files(directory)
    assert path.suffix == ".eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == make_message().as_bytes(policy=email.policy.SMTP)
    assert_intact(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))  # type: ignore[arg-type]
    await transport.send(make_message("<m2.abc@desk.example>"))
    assert len(files(directory)) == 2


@pytest.mark.parametrize(
    "message_id", ["<../../etc/passwd@x>", "<..@x>", "<a/b\\c\x00d@x>", "<" + "x" * 500 + "@x>", "<.>"]
)
async def test_file_transport_names_stay_inside(tmp_path: Path, message_id: str) -> None:
    directory = tmp_path / "outbox"
    transport = FileTransport(directory)
    message = make_message()
    message.replace_header("Message-ID", message_id)
    await transport.send(message)
    (path,) = files(directory)
    assert path.parent == directory
    assert len(path.name) <= 150
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in path.name)
    assert not path.name.startswith(".")
    assert files(tmp_path) == [directory]


async def test_file_transport_distinct_ids_never_share_a_file(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path)
    for message_id in ("<a/b@x>", "<a_b@x>"):
        await transport.send(make_message(message_id))
    assert len(files(tmp_path)) == 2


async def test_file_transport_needs_a_message_id(tmp_path: Path) -> None:
    transport = FileTransport(tmp_path / "outbox")
    with pytest.raises(ValueError, match="Message-ID"):
        await transport.send(make_message(None))
    assert files(tmp_path / "outbox") == []
