"""Mail to the person, end to end through a real SMTP server (aiosmtpd).

Double opt-in, the consent receipt, self-service access, no enumeration, and a crash
between commit and send.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import json
import re
import socket
import statistics
import subprocess
import time
import uuid
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import psutil
import pytest
from aiosmtpd.controller import Controller

from tests.support import (
    LIVE_CONFIG_TOML,
    MARKETING_TEXT,
    ORIGIN,
    PARTNER_SECRET,
    base_config_dict,
    free_port,
    make_config,
    quote_db_name,
    server_env,
    sign_standard,
    start_server,
    wait_ready,
    with_database,
    with_double_opt_in,
)

FORM_URL = "/v1/forms/website-contact"
JSON_URL = "/v1/forms/partner-forms"
BROWSER = {"Origin": ORIGIN, "Accept": "application/json"}
CONTROLLER = "QualityDesk Oy"
CONTACT = "privacy@qualitydesk.example"
MAIL_WAIT_SECONDS = 15.0


class Inbox:
    """What a real SMTP server received, as parsed messages."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        """Store the message (aiosmtpd's handler hook)."""
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(parsed)  # type: ignore[arg-type]
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    async def wait(self, count: int, seconds: float = MAIL_WAIT_SECONDS) -> list[EmailMessage]:
        """Wait until `count` messages have arrived (the mailer polls), then return them."""
        give_up = time.monotonic() + seconds
        while len(self.messages) < count:
            assert time.monotonic() < give_up, f"{len(self.messages)} of {count} mails arrived"
            await asyncio.sleep(0.05)
        return self.messages


@pytest.fixture
def smtp():
    """A real SMTP server on a free port."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port  # type: ignore[attr-defined]
    yield inbox
    controller.stop()


def mail_config(port: int, **extra: Any) -> dict[str, Any]:
    """The test config, mailing through the SMTP server on `port` (plain: a local relay)."""
    raw = with_double_opt_in(base_config_dict())  # the html default
    raw["controller"] = CONTROLLER
    raw["mail"] = {
        "from": "hello@qualitydesk.example",
        "contact": CONTACT,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "poll_seconds": 0.1,
    } | extra
    return raw


@pytest.fixture
async def client(make_client, smtp):
    """The service, mailing through the test's SMTP server, behind one trusted proxy."""
    raw = mail_config(smtp.port)
    raw["limits"] = {"trusted_proxy_hops": 1}  # tests speak for many clients (X-Forwarded-For)
    return await make_client(make_config(raw))


def from_client(number: int) -> dict[str, str]:
    """The header a trusted proxy adds for client `number`."""
    return {"X-Forwarded-For": f"192.0.2.{number}"}


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def link_in(message: EmailMessage, path: str) -> tuple[str, str]:
    """The path and token of the link to `path` in the mail's text."""
    found = re.search(r"https?://[^\s]+" + re.escape(path) + r"\?token=[A-Za-z0-9_.%-]+", body_of(message))
    assert found, f"no {path} link in the mail"
    url = urlsplit(found.group(0))
    return url.path, parse_qs(url.query)["token"][0]


async def test_double_opt_in_grants_only_on_the_mailed_link_then_sends_a_receipt(client, smtp, db):
    form = {"name": "Maija", "email": "maija@example.fi", "marketing": "on", "message": "Hi"}
    response = await client.post(FORM_URL, data=form, headers=BROWSER | {"Accept-Language": "fi-FI,fi;q=0.9"})
    assert response.status == 201
    [confirm] = await smtp.wait(1)
    assert confirm["To"] == "maija@example.fi"
    assert confirm["Content-Language"] == "fi"  # the browser's language
    assert CONTROLLER in confirm["Subject"]
    assert MARKETING_TEXT in body_of(confirm)  # the exact words asked for
    assert await db.fetch("SELECT * FROM crm.consents WHERE granted") == []  # not before the click
    path, token = link_in(confirm, "/v1/confirm")
    # The mail's row went: it keeps no address or wording any more.
    sent = await db.fetchrow("SELECT state, recipient, details, message_id FROM ingest.outbox")
    assert (sent["state"], sent["recipient"], sent["details"]) == ("sent", None, None)
    assert sent["message_id"] == confirm["Message-ID"]

    page = await client.get(path, params={"token": token})  # a mail scanner's GET changes nothing
    assert page.status == 200
    assert await db.fetch("SELECT * FROM crm.consents WHERE granted") == []
    confirmed = await client.post(path, params={"token": token}, headers={"Accept-Language": "sv"})
    assert confirmed.status == 200
    state = await db.fetchrow("SELECT granted, consent_id FROM crm.consents")
    assert dict(state) == {"granted": True, "consent_id": "marketing-email-v1"}
    event = await db.fetchrow("SELECT text_sha256, source FROM ingest.consent_events WHERE granted")
    assert event["text_sha256"] == hashlib.sha256(MARKETING_TEXT.encode()).hexdigest()
    assert event["source"] == "website-contact"  # the form it was asked on
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_consents") == 0
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True

    # Single use: the same link again grants nothing and says so.
    again = await client.post(path, params={"token": token})
    assert again.status == 400

    [_, receipt] = await smtp.wait(2)
    assert receipt["Content-Language"] == "sv"  # the confirming browser's language
    text = body_of(receipt)
    assert MARKETING_TEXT in text and CONTACT in text and "website-contact" in text
    assert "/v1/unsubscribe?token=" in text and "/v1/access" in text
    assert receipt["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [attachment] = list(receipt.iter_attachments())
    assert attachment.get_filename() == "consent-receipt.json"
    document = json.loads(attachment.get_content())
    assert document["consent"]["text"] == MARKETING_TEXT
    assert document["consent"]["text_sha256"] == event["text_sha256"]
    assert document["controller"] == {"name": CONTROLLER, "contact": CONTACT}
    assert document["data_subject"] == {"email": "maija@example.fi"}


async def test_a_grant_nobody_confirms_expires_and_is_purged(client, smtp, db):
    from datetime import UTC, datetime, timedelta

    from ingest import retention
    from ingest.web.keys import POOL

    await client.post(FORM_URL, data={"email": "late@example.fi", "marketing": "on"}, headers=BROWSER)
    await smtp.wait(1)
    later = datetime.now(UTC) + timedelta(days=8)  # past confirm_link_days
    report = await retention.purge(client.app[POOL], later, "test", "unused-pepper-0123456789abcdef-0123")
    assert report["pending_consents_expired"] == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_consents") == 0


async def test_a_signed_partner_grant_is_recorded_at_once_and_gets_a_receipt(client, smtp, db):
    body = json.dumps({"email": "pekka@example.fi", "consents": {"marketing-email-v1": True}}).encode()
    response = await client.post(JSON_URL, data=body, headers=sign_standard(body, PARTNER_SECRET))
    assert response.status == 201
    assert await db.fetchval("SELECT granted FROM crm.consents") is True
    [receipt] = await smtp.wait(1)
    assert receipt["To"] == "pekka@example.fi"
    assert "confirming" not in body_of(receipt)  # nothing was confirmed: a partner's grant
    path, token = link_in(receipt, "/v1/unsubscribe")
    withdrawn = await client.post(path, params={"token": token})  # RFC 8058 one-click
    assert withdrawn.status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False


async def test_no_mail_goes_for_a_delivery_that_did_not_commit(client, smtp, db):
    # An invalid form is refused before anything is written: no outbox row, no mail.
    response = await client.post(
        FORM_URL, data={"email": "not-an-address", "marketing": "on"}, headers=BROWSER
    )
    assert response.status == 422
    await asyncio.sleep(0.5)
    assert smtp.messages == []
    assert await db.fetchval("SELECT count(*) FROM ingest.outbox") == 0


async def _known(client, address: str) -> None:
    response = await client.post(FORM_URL, data={"email": address, "message": "hello"}, headers=BROWSER)
    assert response.status == 201


async def test_self_service_access_shows_the_data_and_offers_objection_and_erasure(client, smtp, db):
    await _known(client, "anna@example.fi")
    form = await client.get("/v1/access")
    assert form.status == 200 and 'name="email"' in await form.text()
    asked = await client.post("/v1/access", data={"email": "Anna@Example.fi"})
    assert asked.status == 200
    [mail] = await smtp.wait(1)
    path, token = link_in(mail, "/v1/access/view")
    assert (await client.get(path, params={"token": token})).status == 200  # a button only
    shown = await client.post(path, params={"token": token})
    assert shown.status == 200
    assert shown.headers["Cache-Control"] == "no-store"
    assert shown.headers["Referrer-Policy"] == "no-referrer"
    page = await shown.text()
    assert "anna@example.fi" in page and "hello" in page
    assert (await client.post(path, params={"token": token})).status == 400  # single use
    session = re.search(r'action="/v1/access/export\?token=([^"]+)"', page)
    assert session
    session_token = session.group(1)
    download = await client.post("/v1/access/export", params={"token": session_token})
    assert download.status == 200
    assert "attachment" in download.headers["Content-Disposition"]
    assert (await download.json())["contacts"][0]["email"] == "anna@example.fi"
    objected = await client.post("/v1/access/object", params={"token": session_token})
    assert objected.status == 200
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    erase = await client.post("/v1/access/erase", params={"token": session_token})
    assert erase.status == 200
    request = await db.fetchrow("SELECT kind, actor FROM ingest.subject_requests")
    assert dict(request) == {"kind": "erasure", "actor": "self-service"}
    actions = [r["action"] for r in await db.fetch("SELECT action FROM ingest.audit_log ORDER BY audit_id")]
    for step in ("access-link-requested", "access-link-opened", "export", "unsubscribe", "request"):
        assert step in actions


async def test_self_service_erasure_at_once_where_the_config_says_so(make_client, smtp, db):
    client = await make_client(make_config(mail_config(smtp.port, erasure="immediate")))
    await _known(client, "ville@example.fi")
    await client.post("/v1/access", data={"email": "ville@example.fi"})
    [mail] = await smtp.wait(1)
    path, token = link_in(mail, "/v1/access/view")
    page = await (await client.post(path, params={"token": token})).text()
    session = re.search(r'action="/v1/access/erase\?token=([^"]+)"', page)
    assert session
    assert (await client.post("/v1/access/erase", params={"token": session.group(1)})).status == 200
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_the_access_page_answers_the_same_for_known_and_unknown_addresses(client, smtp, db):
    known = [f"known{i}@example.fi" for i in range(8)]
    for address in known:
        await _known(client, address)
    unknown = [f"nobody{i}@example.fi" for i in range(8)]
    answers: dict[str, list[tuple[int, str, float]]] = {"known": [], "unknown": []}
    order = [
        x for pair in zip(known, unknown, strict=True) for x in (("known", pair[0]), ("unknown", pair[1]))
    ]
    for number, (kind, address) in enumerate(order):
        started = time.perf_counter()
        response = await client.post("/v1/access", data={"email": address}, headers=from_client(number))
        answers[kind].append((response.status, await response.text(), time.perf_counter() - started))
    assert {(s, t) for s, t, _ in answers["known"]} == {(s, t) for s, t, _ in answers["unknown"]}
    assert len({(s, t) for s, t, _ in answers["known"]}) == 1  # one page for everyone
    # Timing within noise: both paths do the same work but for one outbox row.
    known_median = statistics.median(d for _, _, d in answers["known"])
    unknown_median = statistics.median(d for _, _, d in answers["unknown"])
    assert abs(known_median - unknown_median) < 0.05
    await smtp.wait(len(known))
    assert sorted(r[0] for r in smtp.recipients) == sorted(known)  # only the known are mailed


async def test_the_access_page_is_rate_limited_per_address_whether_known_or_not(client, smtp):
    await _known(client, "busy@example.fi")
    for address in ("busy@example.fi", "ghost@example.fi"):
        statuses = [
            (await client.post("/v1/access", data={"email": address}, headers=from_client(n))).status
            for n in range(4)
        ]
        assert statuses == [200, 200, 200, 429]  # per address, from any client
    # And per client, whatever the address.
    statuses = [
        (await client.post("/v1/access", data={"email": f"p{n}@example.fi"}, headers=from_client(99))).status
        for n in range(6)
    ]
    assert statuses == [200] * 5 + [429]


async def test_no_address_reaches_the_logs_or_metrics(client, smtp, log_output):
    await client.post(
        FORM_URL, data={"email": "secret.person@example.fi", "marketing": "on"}, headers=BROWSER
    )
    await client.post("/v1/access", data={"email": "secret.person@example.fi"})
    await smtp.wait(2)
    metrics = await (await client.get("/metrics")).text()
    assert "secret.person" not in log_output.getvalue()
    assert '"event": "mail_sent"' in log_output.getvalue() and '"mail_id"' in log_output.getvalue()
    assert "secret.person" not in metrics
    assert "ingest_outbox_depth" in metrics


async def _fresh_database(server_dsn: str, template_db: str) -> str:
    name = f"mailcrash_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {quote_db_name(name)} TEMPLATE {quote_db_name(template_db)}")
    finally:
        await admin.close()
    return with_database(server_dsn, name)


async def _until(conn: asyncpg.Connection, query: str, done: Any, seconds: float = 10) -> None:
    give_up = time.monotonic() + seconds
    while await conn.fetchval(query) != done:
        assert time.monotonic() < give_up, query
        await asyncio.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_a_mail_committed_before_a_crash_is_sent_after_the_restart(server_dsn, template_db, tmp_path):
    # The service is killed (SIGKILL) while handing a committed mail over: the SMTP server
    # takes the connection and never answers. After a restart, with a real server on that
    # port, the mail goes out, once its lease has run out, with the Message-ID it was given.
    dsn = await _fresh_database(server_dsn, template_db)
    port = free_port()
    silent = socket.socket()
    silent.bind(("127.0.0.1", port))
    silent.listen(8)  # accepts, never speaks: the send hangs
    config = tmp_path / "ingest.toml"
    config.write_text(
        LIVE_CONFIG_TOML
        + "\n[mail]\n"
        + f'from = "hello@qualitydesk.example"\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\n'
        + 'smtp_security = "none"\npoll_seconds = 0.1\nlease_seconds = 2\n'
    )
    env = server_env(DATABASE_URL=dsn, INGEST_PEPPER="mailcrash-pepper-0123456789abcdef-01")
    process, http_port = start_server(config, env, tmp_path / "log1")
    await asyncio.to_thread(wait_ready, http_port, process)
    body = json.dumps({"email": "kaisa@example.fi", "consents": {"marketing-email-v1": True}}).encode()
    conn = await asyncpg.connect(dsn)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{http_port}{JSON_URL}"
            async with session.post(url, data=body, headers=sign_standard(body, PARTNER_SECRET)) as response:
                assert response.status == 201  # committed, with its receipt queued
        await _until(conn, "SELECT attempts > 0 FROM ingest.outbox", done=True)  # the mailer took it
        # Mid-send, the whole service at once (the arbiter and its worker), as a crash would.
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait(10)
        queued = await conn.fetchrow("SELECT state, message_id FROM ingest.outbox")
        assert queued["state"] == "queued"
        silent.close()
        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            process, http_port = start_server(config, env, tmp_path / "log2")
            await asyncio.to_thread(wait_ready, http_port, process)
            [mail] = await inbox.wait(1, 20)
            assert mail["Message-ID"] == queued["message_id"]
            assert mail["To"] == "kaisa@example.fi"
            await _until(conn, "SELECT state FROM ingest.outbox", "sent")
        finally:
            controller.stop()
    finally:
        await conn.close()
        _stop(process)


async def test_a_look_alike_address_gets_no_access_link_and_no_confirmation(client, smtp, db):
    # `strasse.de` is not `straße.de` (two domains), though the canonical key folds them into
    # one contact: the link and the confirmation go only to the stored mailbox, never to the
    # look-alike someone typed.
    await _known(client, "info@straße.de")
    asked = await client.post("/v1/access", data={"email": "info@strasse.de"}, headers=from_client(1))
    assert asked.status == 200  # the same page as always
    posted = await client.post(
        FORM_URL, data={"email": "info@strasse.de", "marketing": "on"}, headers=BROWSER | from_client(2)
    )
    assert posted.status == 201
    await asyncio.sleep(1.0)  # the mailer polls every 0.1 s here
    assert smtp.messages == []
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_consents") == 0
    # The owner of the stored address still gets their own link.
    await client.post("/v1/access", data={"email": "info@straße.de"}, headers=from_client(3))
    [mail] = await smtp.wait(1)
    assert mail["To"] is not None and smtp.recipients == [["info@straße.de"]]


async def test_posting_the_form_again_does_not_mail_another_confirmation(client, smtp, db):
    for n in range(3):
        form = {"email": "again@example.fi", "marketing": "on", "message": f"try {n}"}
        assert (await client.post(FORM_URL, data=form, headers=BROWSER | from_client(n))).status == 201
    await smtp.wait(1)
    await asyncio.sleep(1.0)
    assert len(smtp.messages) == 1  # one confirmation waits per address and consent
    assert await db.fetchval("SELECT count(*) FROM ingest.pending_consents") == 1


async def test_asking_for_erasure_twice_opens_one_request(client, smtp, db):
    await _known(client, "twice@example.fi")
    await client.post("/v1/access", data={"email": "twice@example.fi"}, headers=from_client(1))
    [mail] = await smtp.wait(1)
    path, token = link_in(mail, "/v1/access/view")
    page = await (await client.post(path, params={"token": token}, headers=from_client(1))).text()
    session = re.search(r'action="/v1/access/erase\?token=([^"]+)"', page)
    assert session
    for _ in range(3):
        erased = await client.post(
            "/v1/access/erase", params={"token": session.group(1)}, headers=from_client(1)
        )
        assert erased.status == 200
    assert await db.fetchval("SELECT count(*) FROM ingest.subject_requests") == 1


def test_the_embedded_defaults_mail_files_are_deleted_after_a_week(tmp_path):
    import os

    from ingest.mail.mailer import FILE_MAIL_DAYS, Mailer
    from ingest.mail.transport import FileTransport

    old, new = tmp_path / "old.eml", tmp_path / "new.eml"
    old.write_text("x")
    new.write_text("y")
    week_ago = time.time() - FILE_MAIL_DAYS * 86400 - 60
    os.utime(old, (week_ago, week_ago))
    mailer = Mailer(make_config(), None, "", FileTransport(tmp_path))  # type: ignore[arg-type]
    assert mailer.sweep_files() == 1
    assert not old.exists() and new.exists()


def test_under_request_load_the_mailer_takes_turns_and_when_quiet_it_goes_on(tmp_path):
    from ingest.mail.mailer import MAIL_YIELD, Mailer
    from ingest.mail.transport import FileTransport

    mailer = Mailer(make_config(), None, "", FileTransport(tmp_path))  # type: ignore[arg-type]
    poll = mailer.settings.poll_seconds
    assert mailer.pause_after(20, 0.05, busy=True) == pytest.approx(0.05 * MAIL_YIELD)  # mail waits its turn
    assert mailer.pause_after(20, 60.0, busy=True) == poll  # never longer than a poll
    assert mailer.pause_after(0, 0.01, busy=False) == poll  # nothing due: poll
    assert mailer.pause_after(20, 0.05, busy=False) == 0.0  # quiet: the next round at once


async def test_the_loop_is_busy_when_ready_work_holds_it_not_when_requests_merely_wait():
    from ingest.mail.mailer import BUSY_TURN_SECONDS, loop_is_busy

    waiting = [asyncio.ensure_future(asyncio.sleep(1)) for _ in range(50)]  # in progress, not ready
    assert await loop_is_busy() is False

    async def hog() -> None:  # ready work that holds the loop, as a request's CPU does
        until = time.monotonic() + BUSY_TURN_SECONDS * 2
        while time.monotonic() < until:
            pass

    hogging = asyncio.ensure_future(hog())
    assert await loop_is_busy() is True
    await hogging
    for task in waiting:
        task.cancel()


async def test_without_smtp_the_mails_are_files_and_the_start_up_log_says_where(make_client, log_output, db):
    import os
    from pathlib import Path

    client = await make_client(make_config(with_double_opt_in(base_config_dict())))
    directory = Path(os.environ["INGEST_MAIL_DIR"]).resolve()  # noqa: ASYNC240 - set for the test run (conftest)
    lines = [
        json.loads(line) for line in log_output.getvalue().splitlines() if "mail_written_as_files" in line
    ]
    assert lines and lines[0]["directory"] == str(directory)
    before = set(directory.iterdir())
    form = {"email": "files@example.fi", "marketing": "on"}
    assert (await client.post(FORM_URL, data=form, headers=BROWSER)).status == 201
    give_up = time.monotonic() + MAIL_WAIT_SECONDS
    while not (set(directory.iterdir()) - before):
        assert time.monotonic() < give_up, "no .eml file was written"
        await asyncio.sleep(0.1)
    [path] = set(directory.iterdir()) - before
    assert path.suffix == ".eml"
    written = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert written["To"] == "files@example.fi"
