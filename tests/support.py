"""Helpers shared by the tests: database names, configs, signing, dumps."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import tomli_w
from standardwebhooks import Webhook

from ingest.adapters import check_sources
from ingest.config import Config, parse_config

# Not the README's example secret (the spec's test vector), which only the embedded default accepts.
PARTNER_SECRET = "whsec_cXVhbGl0eWRlc2staW5nZXN0IHRlc3Qgc2VjcmV0IDMy"
ORIGIN = "https://www.qualitydesk.com"
ADMIN_TOKEN = "test-admin-token-please-rotate"
PEPPER = "test-pepper-0123456789abcdef-0123456789"
MARKETING_TEXT = "Yes, send me QualityDesk news by e-mail. I can unsubscribe at any time."

ROOT = Path(__file__).resolve().parents[1]
_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def quote_db_name(name: str) -> str:
    """Quote a database name we generated ourselves (identifiers cannot be parameters)."""
    if not _DB_NAME_RE.match(name):
        raise ValueError("unexpected database name")
    return f'"{name}"'


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def base_config_dict() -> dict[str, Any]:
    """A config exercising every generic format and consent."""
    return {
        "notice_version": "2024-01",
        "default_region": "FI",
        "purposes": {
            "contact": {"lawful_basis": "legitimate_interest", "retention_days": 730},
            "customer_relationship": {"lawful_basis": "legitimate_interest", "retention_days": 1095},
            "direct_marketing": {"lawful_basis": "consent", "retention_days": 730},
        },
        "consents": {
            "marketing-email-v1": {"purpose": "direct_marketing", "text": MARKETING_TEXT},
        },
        "sources": {
            "website-contact": {
                "channel": "form",
                "format": "html",
                "allowed_origins": [ORIGIN],
                "purposes": ["contact", "customer_relationship"],
                "consent_fields": {"marketing": "marketing-email-v1"},
                "success_url": f"{ORIGIN}/thanks",
                "error_url": f"{ORIGIN}/oops",
                # Most tests are about other things than double opt-in (the html default):
                # their ticked boxes count at once. tests/test_mail.py and
                # tests/test_forms_html.py switch it on (`with_double_opt_in`).
                "double_opt_in": False,
            },
            "partner-forms": {
                "channel": "form",
                "format": "json",
                "secret_env": "PARTNER_FORMS_SECRET",
                "purposes": ["contact"],
            },
            "partner-chat": {
                "channel": "chat",
                "format": "json",
                "secret_env": "PARTNER_FORMS_SECRET",
                "purposes": ["contact"],
            },
        },
        "admin_tokens": {
            "privacy-officer": {
                "token_sha256_env": "INGEST_TOKEN_PRIVACY_OFFICER",
                "scopes": ["export", "erase", "opt-out", "purge"],
            },
            "auditor": {"token_sha256_env": "INGEST_TOKEN_AUDITOR", "scopes": ["export"]},
        },
    }


def with_double_opt_in(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with the html source's default back: marketing grants wait for the mailed link."""
    del raw["sources"]["website-contact"]["double_opt_in"]
    return raw


def secrets_environ() -> dict[str, str]:
    """The environment the test config's secrets come from."""
    return {
        "PARTNER_FORMS_SECRET": PARTNER_SECRET,
        "INGEST_TOKEN_PRIVACY_OFFICER": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        "INGEST_TOKEN_AUDITOR": hashlib.sha256(b"auditor-token").hexdigest(),
    }


def make_config(raw: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Validate a config dict (the base one by default); the README's example secret is allowed here."""
    raw = raw or base_config_dict()
    return check_sources(parse_config(raw, environ or secrets_environ(), example_secrets_allowed=True))


def sign_standard(
    body: bytes, secret: str = PARTNER_SECRET, msg_id: str | None = None, timestamp: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = datetime.fromtimestamp(timestamp if timestamp is not None else time.time(), tz=UTC)
    signature = Webhook(secret).sign(msg_id, ts, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def _hmac(secret: str, message: bytes, digest: Any) -> hmac.HMAC:
    return hmac.new(secret.encode(), message, digest)


def _sign_webflow(body: bytes, secret: str) -> dict[str, str]:
    now_ms = str(int(time.time() * 1000))
    signature = _hmac(secret, now_ms.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-webflow-timestamp": now_ms, "x-webflow-signature": signature}


def _sign_netlify(body: bytes, secret: str) -> dict[str, str]:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iss": "netlify", "sha256": hashlib.sha256(body).hexdigest()}).encode())
    signature = _b64url(_hmac(secret, f"{head}.{claims}".encode(), hashlib.sha256).digest())
    return {"X-Webhook-Signature": f"{head}.{claims}.{signature}"}


def _sign_crisp_plugin(body: bytes, secret: str) -> dict[str, str]:
    now_ms = str(int(time.time() * 1000))
    signature = _hmac(secret, f"[{now_ms};".encode() + body + b"]", hashlib.sha256).hexdigest()
    return {"X-Crisp-Request-Timestamp": now_ms, "X-Crisp-Signature": signature}


def _sign_standard_only(body: bytes, secret: str) -> dict[str, str]:
    try:
        body.decode()
    except UnicodeDecodeError:
        return {}  # Standard Webhooks signs text: such a body is refused unsigned either way (401)
    headers = sign_standard(body, secret)
    del headers["Content-Type"]  # the caller's content type is part of what is tested
    return headers


# Format -> the headers that authenticate a body, one per adapter's verify code.
HEADER_SIGNERS: dict[str, Any] = {
    "json": _sign_standard_only,
    "hubspot": _sign_standard_only,
    "tawkto": lambda body, secret: {"X-Tawk-Signature": _hmac(secret, body, hashlib.sha1).hexdigest()},
    "intercom": lambda body, secret: {
        "X-Hub-Signature": "sha1=" + _hmac(secret, body, hashlib.sha1).hexdigest()
    },
    "zendesk": lambda _, secret: {"X-API-Key": secret},
    "typeform": lambda body, secret: {
        "Typeform-Signature": "sha256=" + b64(_hmac(secret, body, hashlib.sha256).digest())
    },
    "tally": lambda body, secret: {"Tally-Signature": b64(_hmac(secret, body, hashlib.sha256).digest())},
    "webflow": _sign_webflow,
    "netlify": _sign_netlify,
}


def sign_delivery(
    fmt: str, body: bytes, secret: str, options: dict[str, Any] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query parameters that authenticate `body` for a source of format `fmt`.

    LiveChat's secret travels in the body and html needs none: both get nothing here.
    """
    options = options or {}
    if fmt == "crisp" and options.get("hook") == "plugin":
        return _sign_crisp_plugin(body, secret), {}
    if fmt in ("crisp", "jotform"):  # a secret in the URL pasted into the provider
        return {}, {options.get("key_parameter", "key"): secret}
    signer = HEADER_SIGNERS.get(fmt)
    return (signer(body, secret) if signer else {}), {}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64(data: bytes) -> str:
    """Base64 text."""
    return base64.b64encode(data).decode()


async def dump_database(conn: asyncpg.Connection) -> str:
    """Every row of every table in our schemas, as text (for 'no trace' assertions)."""
    tables = await conn.fetch(
        """
        SELECT format('%I.%I', table_schema, table_name) AS qualified
          FROM information_schema.tables
         WHERE table_schema IN ('ingest', 'public') AND table_type = 'BASE TABLE'
        """
    )
    chunks = []
    for row in tables:
        # Names come from information_schema, quoted by format('%I'): not user input.
        rows = await conn.fetch(f"SELECT t::text AS line FROM {row['qualified']} t")  # noqa: S608
        chunks.extend(r["line"] for r in rows)
    return "\n".join(chunks)


def config_with_source(name: str, secrets: dict[str, str] | None = None, **source: Any) -> Config:
    """The base config plus one more source (for provider adapter tests).

    `secrets` adds environment variables, e.g. {"TAWK_SECRET": "..."} with
    source(secret_env="TAWK_SECRET").
    """
    raw = base_config_dict()
    raw["sources"][name] = source
    return make_config(raw, secrets_environ() | (secrets or {}))


# A config for live-server tests (fuzzing, faults): every generic format, an admin
# token, and limits high enough that a load generator is not rate limited.
def live_config_dict() -> dict[str, Any]:
    """The test config for a served process (`ingest serve`, the browser, fuzzers).

    The base config narrowed to what those tests drive (one purpose on the website
    form, its built-in pages, one admin token) and with limits that fuzzers do not trip.
    """
    raw = base_config_dict()
    del raw["purposes"]["customer_relationship"]
    website = raw["sources"]["website-contact"]
    website["purposes"] = ["contact"]
    del website["success_url"], website["error_url"]
    raw["admin_tokens"] = {
        "privacy-officer": {
            "token_sha256_env": "INGEST_TOKEN_PRIVACY_OFFICER",
            "scopes": ["export", "erase", "opt-out"],
        }
    }
    raw["limits"] = {
        "rate_per_client_per_minute": 10_000_000,
        "rate_per_source_per_second": 10_000_000,
        # Fuzzers send everything unsigned from one address: not a flood to throttle here.
        "auth_failures_per_client_per_minute": 10_000_000,
        "body_timeout_seconds": 2,
    }
    return raw


LIVE_CONFIG_TOML = tomli_w.dumps(live_config_dict())


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    config: Path,
    env: dict[str, str],
    log: Path,
    global_args: tuple[str, ...] = (),
    serve_args: tuple[str, ...] = ("--workers", "1", "--no-migrate"),
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `ingest serve` on a free port; return the process and the port."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ingest",
                "--config",
                str(config),
                *global_args,
                "serve",
                *serve_args,
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return process, port


def wait_ready(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Wait until /readyz answers 200 (fail if the server exits first)."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become ready")


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a live server: this one, less our variables, plus test secrets."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "INGEST_CONFIG", "INGEST_PEPPER")}
    return env | {"PARTNER_FORMS_SECRET": PARTNER_SECRET} | secrets_environ() | extra


async def stored_ids(dsn: str, ids: set[str], *, primary: bool = False) -> set[str]:
    """Which of these submission ids the database at `dsn` holds (after a fault: none lost?).

    With `primary`, also check that the server is not (or no longer) a standby.
    """
    conn = await asyncpg.connect(dsn)
    try:
        if primary:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False, "the standby was promoted"
        rows = await conn.fetch(
            "SELECT submission_id::text AS id FROM ingest.submissions WHERE submission_id = ANY($1::uuid[])",
            list(ids),
        )
        return {r["id"] for r in rows}
    finally:
        await conn.close()
