"""Signed links: single-use confirmation, objections that outlive older links, capped lifetimes.

Only the canonical encoding of a token verifies; unsubscribing stays idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingest import links, retention
from ingest.errors import ConfigError
from ingest.links import make_token
from ingest.pseudonyms import email_key
from ingest.web.keys import POOL
from tests.support import ADMIN_TOKEN, ORIGIN, PARTNER_SECRET, PEPPER, base_config_dict, make_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "ingest.example.toml"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORM_HEADERS = {"Origin": ORIGIN, "Accept": "application/json"}
EMAIL = "maija@example.fi"
MAIJA = {"name": "Maija Meikäläinen", "email": EMAIL, "phone": "040 123 4567", "message": "Hello"}
CONSENT = "marketing-email-v1"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _key() -> bytes:
    return email_key(PEPPER, EMAIL)


def _confirm_token(now: datetime | None = None, days: int = 7) -> str:
    return make_token(PEPPER, "confirm", _key(), now or datetime.now(UTC), days, consent_id=CONSENT)


def _unsubscribe_token(days: int = 7) -> str:
    return make_token(PEPPER, "unsubscribe", _key(), datetime.now(UTC), days)


async def _form(client, **extra: str) -> None:
    response = await client.post("/v1/forms/website-contact", data=MAIJA | extra, headers=FORM_HEADERS)
    assert response.status == 201, await response.text()


async def _opt_out(client, **subject: str) -> None:
    response = await client.post("/v1/subjects/opt-out", json=subject or {"email": EMAIL}, headers=ADMIN)
    assert response.status == 200


async def _unsubscribe(client, token: str | None = None) -> int:
    response = await client.post(
        "/v1/unsubscribe",
        params={"token": token or _unsubscribe_token()},
        data={"List-Unsubscribe": "One-Click"},
    )
    return response.status


async def _marketing_allowed(db) -> bool:
    allowed: bool = await db.fetchval("SELECT marketing_allowed FROM crm.contacts")
    return allowed


# --- single use ---------------------------------------------------------------------------------


async def test_a_confirmation_link_works_once(client, db):
    await _form(client, marketing="on")
    await _opt_out(client)
    token = _confirm_token()
    assert (await client.get("/v1/confirm", params={"token": token})).status == 200
    assert (await client.get("/v1/confirm", params={"token": token})).status == 200  # GET uses nothing up
    first = await client.post("/v1/confirm", params={"token": token})
    assert first.status == 200
    assert await _marketing_allowed(db) is True
    await _opt_out(client)  # the person objects again ...
    second = await client.post("/v1/confirm", params={"token": token})  # ... and the old link is replayed
    assert second.status == 400
    assert "Link not valid" in await second.text()
    assert await _marketing_allowed(db) is False
    page = await client.get("/v1/confirm", params={"token": token})
    assert page.status == 400
    assert "not valid" in await page.text()


async def test_a_used_confirmation_link_is_refused_even_with_no_objection_in_between(client, db):
    await _form(client, marketing="on")
    await _opt_out(client)
    token = _confirm_token()
    assert (await client.post("/v1/confirm", params={"token": token})).status == 200
    assert (await client.post("/v1/confirm", params={"token": token})).status == 400
    # Only the one grant was recorded.
    grants = await db.fetchval("SELECT count(*) FROM ingest.consent_events WHERE source = 'confirm-link'")
    assert grants == 1


async def test_purge_forgets_used_links_past_their_expiry(client, db):
    await _form(client, marketing="on")
    assert (await client.post("/v1/confirm", params={"token": _confirm_token()})).status == 200
    [digest] = await db.fetchrow("SELECT digest FROM ingest.used_links")
    assert len(digest) == 32
    assert digest != _key()  # names the link, not the person
    report = await retention.purge(client.app[POOL], datetime.now(UTC), "test", PEPPER)
    assert report["used_links"] == 0  # not expired yet: still refused as used
    await db.execute("UPDATE ingest.used_links SET expires_at = now() - interval '1 second'")
    report = await retention.purge(client.app[POOL], datetime.now(UTC), "test", PEPPER)
    assert report["used_links"] == 1
    assert await db.fetchval("SELECT count(*) FROM ingest.used_links") == 0


# --- a later objection outlives older links ------------------------------------------------------


async def _object_by_unsubscribe_link(client, db) -> None:
    assert await _unsubscribe(client) == 200


async def _object_by_admin(client, db) -> None:
    await _opt_out(client)


async def _object_by_phone(client, db) -> None:
    await _opt_out(client, phone="040 123 4567")


async def _object_again(client, db) -> None:
    # The suppression already exists (from before the link): objecting again must still count.
    await _opt_out(client)


@pytest.mark.parametrize(
    "objection", [_object_by_unsubscribe_link, _object_by_admin, _object_by_phone, _object_again]
)
async def test_a_confirmation_link_issued_before_an_objection_does_not_lift_it(client, db, objection):
    await _form(client, marketing="on")
    if objection is _object_again:
        await _opt_out(client)
    token = _confirm_token()
    await objection(client, db)
    assert await _marketing_allowed(db) is False
    page = await client.get("/v1/confirm", params={"token": token})
    assert page.status == 400
    assert "not valid" in await page.text()
    response = await client.post("/v1/confirm", params={"token": token})
    assert response.status == 400
    assert await _marketing_allowed(db) is False
    assert await db.fetchval("SELECT count(*) FROM ingest.suppressions") >= 1


async def test_a_confirmation_link_issued_after_the_objection_still_lifts_it(client, db):
    await _form(client, marketing="on")
    await _unsubscribe(client)
    await _opt_out(client)
    token = _confirm_token()
    assert (await client.get("/v1/confirm", params={"token": token})).status == 200
    assert (await client.post("/v1/confirm", params={"token": token})).status == 200
    assert await _marketing_allowed(db) is True


async def test_existing_suppressions_were_last_objected_to_when_created(db):
    columns = await db.fetch(
        "SELECT column_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'ingest' AND table_name = 'suppressions'"
    )
    assert ("last_objected_at", "NO") in [(c["column_name"], c["is_nullable"]) for c in columns]


# --- unsubscribe stays idempotent ---------------------------------------------------------------


async def test_unsubscribing_twice_succeeds_twice(client, db):
    await _form(client, marketing="on")
    token = _unsubscribe_token()
    for _ in range(2):
        response = await client.post(
            "/v1/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"}
        )
        assert response.status == 200
        assert "Unsubscribed" in await response.text()
    assert await _marketing_allowed(db) is False
    details = await db.fetch(
        "SELECT details FROM ingest.audit_log WHERE action = 'unsubscribe' ORDER BY audit_id"
    )
    added = [json.loads(d["details"])["suppression_entries_added"] for d in details]
    assert added == [2, 0]  # e-mail and phone; the second objection renews them, adds nothing


async def test_the_pages_change_nothing(client, db):
    await _form(client, marketing="on")
    unsubscribe = _unsubscribe_token()
    for _ in range(2):
        assert (await client.get("/v1/unsubscribe", params={"token": unsubscribe})).status == 200
    assert await _marketing_allowed(db) is True
    await _opt_out(client)
    confirm = _confirm_token()
    for _ in range(2):
        assert (await client.get("/v1/confirm", params={"token": confirm})).status == 200
    assert await _marketing_allowed(db) is False
    assert (await client.post("/v1/confirm", params={"token": confirm})).status == 200


# --- lifetimes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "days"), [("confirm", 8), ("confirm", 3650), ("unsubscribe", 61)])
async def test_a_link_made_to_outlive_the_configured_lifetime_is_refused(client, db, action, days):
    await _form(client, marketing="on")
    await _opt_out(client)
    token = make_token(PEPPER, action, _key(), datetime.now(UTC), days, consent_id=CONSENT)
    page = await client.get(f"/v1/{action}", params={"token": token})
    assert page.status == 400
    assert (await client.post(f"/v1/{action}", params={"token": token})).status == 400
    assert await _marketing_allowed(db) is False


async def test_the_lifetime_cap_is_the_configured_one(make_client, db):
    raw = base_config_dict() | {"limits": {"confirm_link_days": 2, "unsubscribe_link_days": 365}}
    client = await make_client(make_config(raw))
    await _form(client, marketing="on")
    assert (await client.get("/v1/confirm", params={"token": _confirm_token(days=3)})).status == 400
    assert (await client.get("/v1/confirm", params={"token": _confirm_token(days=2)})).status == 200
    assert await _unsubscribe(client, _unsubscribe_token(days=365)) == 200


@pytest.mark.parametrize(
    ("key", "value", "refused"),
    [
        ("confirm_link_days", 30, False),
        ("confirm_link_days", 31, True),
        ("confirm_link_days", 3650, True),
        ("unsubscribe_link_days", 365, False),
        ("unsubscribe_link_days", 366, True),
        ("confirm_link_days", 0, True),
    ],
)
def test_a_configured_lifetime_above_the_maximum_is_refused(key, value, refused):
    raw = base_config_dict() | {"limits": {key: value}}
    if not refused:
        assert getattr(make_config(raw).limits, key) == value
        return
    with pytest.raises(ConfigError) as caught:
        make_config(raw)
    assert f"limits.{key}:" in str(caught.value)


def test_the_default_lifetimes():
    limits = make_config().limits
    assert (limits.confirm_link_days, limits.unsubscribe_link_days) == (7, 60)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "INGEST_CONFIG", "INGEST_PEPPER")}
    env |= {"PARTNER_FORMS_SECRET": PARTNER_SECRET, "INGEST_PEPPER": PEPPER}
    return subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(EXAMPLE), *args, "--email", EMAIL],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "days"),
    [("confirm-link", "3650"), ("confirm-link", "8"), ("unsubscribe-link", "61"), ("confirm-link", "0")],
)
def test_the_cli_refuses_a_lifetime_above_the_cap(command, days):
    result = _cli(command, "--days", days)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "--days" in line
    assert "maija" not in result.stderr


def _claims_of(url: str) -> dict[str, object]:
    payload = url.strip().split("token=", 1)[1].split(".")[0]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@pytest.mark.parametrize(("command", "days"), [("confirm-link", 7), ("unsubscribe-link", 60)])
def test_the_cli_gives_the_configured_lifetime_by_default(command, days):
    result = _cli(command)
    assert result.returncode == 0, result.stderr
    claims = _claims_of(result.stdout)
    issued = int(claims["i"]) / 1_000_000  # type: ignore[call-overload]
    assert int(claims["e"]) - issued == pytest.approx(days * 86400, abs=1)  # type: ignore[call-overload]
    assert (_cli(command, "--days", str(days)).returncode, _cli(command, "--days", "1").returncode) == (0, 0)


async def test_a_link_from_the_cli_works_and_its_confirmation_only_once(client, db):
    await _form(client, marketing="on")
    await _opt_out(client)
    result = _cli("confirm-link")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().split("token=", 1)[1]
    assert (await client.post("/v1/confirm", params={"token": token})).status == 200
    assert await _marketing_allowed(db) is True
    assert (await client.post("/v1/confirm", params={"token": token})).status == 400


# --- canonical encodings only -------------------------------------------------------------------


def _spare_bits_set(segment: str) -> str | None:
    """The same bytes, spelled with the last character's unused low bits set (None: it has none)."""
    spare = {2: 4, 3: 2}.get(len(segment) % 4)
    if spare is None:
        return None
    last = B64URL.index(segment[-1])
    return segment[:-1] + B64URL[last | ((1 << spare) - 1)]


def _sign(claims: dict[str, object]) -> str:
    """A genuine token for these claims, in the v1 format (for claims make_token no longer writes)."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    signature = hmac.new(links._key(PEPPER), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _variants(token: str) -> dict[str, str]:
    payload, signature = token.split(".")
    variants = {
        "signature!!": f"{payload}.{signature}!!",
        "signature====": f"{payload}.{signature}====",
        "signature=": f"{payload}.{signature}=",
        "signature space": f"{payload}.{signature} ",
        "signature newline": f"{payload}.{signature}\n",
        "payload=": f"{payload}=.{signature}",
        "payload!!": f"{payload}!!.{signature}",
    }
    if (respelled := _spare_bits_set(signature)) is not None:
        variants["signature last character"] = f"{payload}.{respelled}"
    if (respelled := _spare_bits_set(payload)) is not None:
        variants["payload last character"] = f"{respelled}.{signature}"
    return variants


def _variant(token: str, name: str) -> str:
    variants = _variants(token)
    if name not in variants:  # the claims' length leaves no spare bits in this segment
        pytest.skip(f"{name}: no spare bits to set")
    return variants[name]


VARIANT_NAMES = [
    "signature!!",
    "signature====",
    "signature=",
    "signature space",
    "signature newline",
    "payload=",
    "payload!!",
    "signature last character",
    "payload last character",
]


@pytest.mark.parametrize("variant", VARIANT_NAMES)
async def test_an_unsubscribe_link_verifies_only_in_its_canonical_encoding(client, db, variant):
    await _form(client, marketing="on")
    token = _unsubscribe_token()
    altered = _variant(token, variant)
    assert (await client.get("/v1/unsubscribe", params={"token": altered})).status == 400
    assert await _unsubscribe(client, altered) == 400
    assert await _marketing_allowed(db) is True
    assert await _unsubscribe(client, token) == 200


@pytest.mark.parametrize("variant", VARIANT_NAMES)
async def test_a_confirmation_link_verifies_only_in_its_canonical_encoding(client, db, variant):
    await _form(client, marketing="on")
    await _opt_out(client)
    token = _confirm_token()
    altered = _variant(token, variant)
    assert (await client.get("/v1/confirm", params={"token": altered})).status == 400
    assert (await client.post("/v1/confirm", params={"token": altered})).status == 400
    assert await _marketing_allowed(db) is False
    # Nor does a respelling of a used link come back as a new one.
    assert (await client.post("/v1/confirm", params={"token": token})).status == 200
    await _opt_out(client)
    assert (await client.post("/v1/confirm", params={"token": altered})).status == 400
    assert await _marketing_allowed(db) is False


def test_the_spare_bits_helper_respells_the_same_bytes():
    signature = make_token(PEPPER, "unsubscribe", _key(), datetime.now(UTC)).split(".")[1]
    respelled = _spare_bits_set(signature)
    assert respelled is not None
    assert respelled != signature
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(signature + "=")


# --- links from before issue times --------------------------------------------------------------


def _legacy_claims(action: str, days: int) -> dict[str, object]:
    claims: dict[str, object] = {
        "a": action,
        "h": _key().hex(),
        "e": int((datetime.now(UTC) + timedelta(days=days)).timestamp()),
    }
    if action == "confirm":
        claims["c"] = CONSENT
    return claims


async def test_an_unsubscribe_link_mailed_before_issue_times_still_works_within_the_cap(client, db):
    await _form(client, marketing="on")
    assert await _unsubscribe(client, _sign(_legacy_claims("unsubscribe", 3650))) == 400
    assert await _marketing_allowed(db) is True
    assert await _unsubscribe(client, _sign(_legacy_claims("unsubscribe", 30))) == 200
    assert await _marketing_allowed(db) is False


async def test_a_confirmation_link_without_an_issue_time_is_refused(client, db):
    await _form(client, marketing="on")
    await _opt_out(client)
    token = _sign(_legacy_claims("confirm", 3))
    assert (await client.get("/v1/confirm", params={"token": token})).status == 400
    assert (await client.post("/v1/confirm", params={"token": token})).status == 400
    assert await _marketing_allowed(db) is False


@pytest.mark.parametrize(
    "claims",
    [
        {"i": True},
        {"i": "0"},
        {"e": 1.5e12},
        {"i": 10**30},
    ],
)
async def test_odd_issue_or_expiry_times_are_an_invalid_link(client, claims):
    base = _legacy_claims("confirm", 3) | {"i": int(datetime.now(UTC).timestamp() * 1_000_000)}
    token = _sign(base | claims)
    assert (await client.post("/v1/confirm", params={"token": token})).status == 400


async def test_the_unsubscribe_pages_name_the_configured_controller(make_client):
    raw = base_config_dict()
    raw["controller"] = "Esimerkki & Co Oy"
    client = await make_client(make_config(raw))
    page = await client.get("/v1/unsubscribe", params={"token": _unsubscribe_token()})
    assert "Stop marketing e-mails from Esimerkki &amp; Co Oy" in await page.text()
    done = await client.post("/v1/unsubscribe", params={"token": _unsubscribe_token()})
    text = await done.text()
    assert "from Esimerkki &amp; Co Oy any more" in text
    assert "QualityDesk" not in text
