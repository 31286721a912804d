"""Browser-facing pages (issue 13, item 7): CSP, frame and referrer policy, nosniff everywhere."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

import pytest

from ingest.links import make_token
from ingest.pseudonyms import email_key
from tests.support import ORIGIN, PEPPER, base_config_dict, make_config

FORM = "/v1/forms/website-contact"
BROWSER = {"Origin": ORIGIN, "Accept": "text/html,application/xhtml+xml"}


def _without_redirects():
    # No success_url or error_url: the browser gets the service's own thanks and error pages.
    raw = base_config_dict()
    del raw["sources"]["website-contact"]["success_url"]
    del raw["sources"]["website-contact"]["error_url"]
    return make_config(raw)


def _directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    pairs = (d.strip().partition(" ") for d in policy.split(";") if d.strip())
    return {name: value for name, _, value in pairs}


async def _assert_protected(response, referrer: str = "no-referrer") -> dict[str, str]:
    assert response.content_type == "text/html"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == referrer
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = _directives(response)
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert "'self'" in csp["form-action"].split()
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "script-src" not in csp  # no page runs a script: default-src 'none' covers it
    # Every inline style of the page is allowed by its hash, and nothing else is.
    for style in re.findall(r"<style>(.*?)</style>", await response.text(), re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["style-src"].split()
    return csp


async def test_the_form_page_is_protected_and_may_post_to_its_redirect_targets(make_client):
    client = await make_client(make_config())
    response = await client.get(FORM)
    assert response.status == 200
    # The form posts same-origin with its Origin header, which the origin check needs:
    # under no-referrer a browser sends `Origin: null` and the post would be refused.
    csp = await _assert_protected(response, referrer="same-origin")
    # Browsers apply form-action to the redirect after the post, too.
    assert set(csp["form-action"].split()) == {"'self'", ORIGIN}


async def test_the_thanks_and_error_pages_are_protected(make_client):
    client = await make_client(_without_redirects())
    thanks = await client.post(FORM, data={"email": "maija@example.fi"}, headers=BROWSER)
    assert thanks.status == 201
    await _assert_protected(thanks)
    invalid = await client.post(FORM, data={"phone": "123"}, headers=BROWSER)
    assert invalid.status == 422
    # The 422 page holds the form again (filled in): under no-referrer a browser would
    # post it with `Origin: null`, which the origin check refuses.
    await _assert_protected(invalid, referrer="same-origin")
    refused = await client.post(
        FORM, data={"email": "x@example.fi"}, headers=BROWSER | {"Origin": "https://evil"}
    )
    assert refused.status == 403
    await _assert_protected(refused)
    form = await client.get(FORM)
    assert set(_directives(form)["form-action"].split()) == {"'self'"}


def _token(action: str) -> str:
    consent = "marketing-email-v1" if action == "confirm" else None
    return make_token(
        PEPPER, action, email_key(PEPPER, "maija@example.fi"), datetime.now(UTC), consent_id=consent
    )


@pytest.mark.parametrize("path", ["/v1/unsubscribe", "/v1/confirm"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
async def test_the_link_pages_are_protected(client, path, method, valid):
    token = _token(path.rsplit("/", 1)[1]) if valid else "not.a-token"
    response = await client.request(method, path, params={"token": token})
    assert response.status == (200 if valid else 400)
    await _assert_protected(response)  # no-referrer: the token is in the page's URL


async def test_every_response_says_nosniff(client):
    responses = [
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.get("/no/such/route"),
        # A browser's post answered 303 to the source's success_url.
        await client.post(FORM, data={"email": "p@example.fi"}, headers=BROWSER, allow_redirects=False),
        await client.post(
            "/v1/forms/partner-forms", data=b"{}", headers={"Content-Type": "application/json"}
        ),
        await client.get("/v1/subjects", params={"email": "a@example.fi"}),
    ]
    assert [r.status for r in responses] == [200, 200, 404, 303, 401, 401]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in response.headers or response.content_type == "text/html"
