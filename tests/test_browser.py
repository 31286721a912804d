"""The example form in a real headless browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support import (
    LIVE_CONFIG_TOML,
    MARKETING_TEXT,
    PARTNER_SECRET,
    free_port,
    quote_db_name,
    secrets_environ,
    server_env,
    start_server,
    wait_ready,
    with_database,
)

CHROMIUM = shutil.which("chromium")
CHROMIUM_MISSING = (
    "chromium is not on PATH: apt-get install chromium (Debian's; Playwright drives it) "
    "to run the browser tests"
)
# CI (.ci/run) sets INGEST_REQUIRE_ALL_TESTS=1: there a missing browser fails instead of skipping.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("INGEST_REQUIRE_ALL_TESTS") != "1", reason=CHROMIUM_MISSING
)
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "example-form.png"


@pytest.fixture(scope="module")
def site_port() -> int:
    """The port of a website (another origin) that embeds the snippet of `ingest form-snippet`."""
    return free_port()


def _embedded_sources(site: str) -> str:
    # Two html sources for the website's page: one with a person's fill time, one that no
    # test waits out (a post "at once" is refused by a 60x margin, whatever the load).
    return "".join(
        f"""
[sources.{name}]
channel = "form"
format = "html"
allowed_origins = ["{site}"]
purposes = ["contact"]
consent_fields = {{ marketing = "marketing-email-v1" }}
success_url = "{site}/thanks.html"
min_fill_seconds = {seconds}
"""
        for name, seconds in (("website-embedded", 1), ("website-strict", 60))
    )


@pytest.fixture(scope="module")
def live(server_dsn: str, template_db: str, tmp_path_factory, site_port: int) -> Iterator[tuple[str, str]]:
    """A real server on its own database; yields (base URL, database DSN)."""
    name = f"ingest_browser_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {quote_db_name(name)} TEMPLATE {quote_db_name(template_db)}"))
    tmp = tmp_path_factory.mktemp("browser")
    config = tmp / "ingest.toml"
    config.write_text(
        LIVE_CONFIG_TOML.replace(
            'notice_version = "2024-01"', 'notice_version = "2024-01"\nnotice_url = "/privacy"'
        )
        + _embedded_sources(f"http://127.0.0.1:{site_port}")
    )
    dsn = with_database(server_dsn, name)
    process, port = start_server(
        config,
        server_env(DATABASE_URL=dsn, INGEST_PEPPER="browser-pepper-0123456789abcdef-0123"),
        tmp / "log",
    )
    try:
        wait_ready(port, process)
        yield f"http://127.0.0.1:{port}", dsn
    finally:
        process.terminate()
        process.wait(timeout=30)
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {quote_db_name(name)} WITH (FORCE)"))


@pytest.fixture
async def page() -> AsyncIterator:
    from playwright.async_api import async_playwright

    assert CHROMIUM is not None, f"{CHROMIUM_MISSING} (INGEST_REQUIRE_ALL_TESTS=1)"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = await browser.new_context(viewport={"width": 800, "height": 900})
        yield await context.new_page()
        await browser.close()


async def test_a_person_fills_in_the_form_ticks_consent_and_lands_on_the_thanks_page(live, page, tmp_path):
    base, dsn = live
    await page.goto(f"{base}/v1/forms/website-contact")
    assert await page.title() == "Contact us"
    await page.get_by_label("Name", exact=True).fill("Maija Meikäläinen")
    await page.get_by_label("E-mail", exact=True).fill("maija.browser@example.fi")
    await page.get_by_label("Message", exact=True).fill("Please call me about the offer.")
    consent = page.get_by_label(MARKETING_TEXT, exact=True)  # the exact words from the config
    await consent.check()
    # INGEST_UPDATE_SCREENSHOT=1 refreshes the README's picture of the form.
    target = SCREENSHOT if os.environ.get("INGEST_UPDATE_SCREENSHOT") else tmp_path / "form.png"
    await page.screenshot(path=str(target), full_page=True)
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.title() == "Thank you"
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT c.name, c.marketing_allowed, k.granted, k.consent_id FROM crm.contacts c "
            "JOIN crm.consents k USING (contact_id) WHERE c.email = 'maija.browser@example.fi'"
        )
    finally:
        await conn.close()
    assert dict(row) == {
        "name": "Maija Meikäläinen",
        "marketing_allowed": True,
        "granted": True,
        "consent_id": "marketing-email-v1",
    }


async def test_invalid_data_is_explained_on_the_page(live, page):
    base, _ = live
    await page.goto(f"{base}/v1/forms/website-contact")
    await page.get_by_label("Phone", exact=True).fill("123")  # no e-mail, and a phone that is not one
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.title() == "Your message was not sent"
    alert = await page.get_by_role("alert").inner_text()
    assert "Phone: Not a valid phone number." in alert
    # The form is on the 422 page again, with what was typed, and nothing of it in the URL.
    assert await page.get_by_label("Phone", exact=True).input_value() == "123"
    assert "123" not in page.url
    await page.get_by_label("Phone", exact=True).fill("040 765 4321")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.title() == "Thank you"  # no public_url: the local trial stays local


async def test_the_422_page_keeps_everything_the_person_typed(live, page):
    base, dsn = live
    await page.goto(f"{base}/v1/forms/website-contact")
    await page.get_by_label("Name", exact=True).fill("Matti Meikäläinen")
    await page.get_by_label("E-mail", exact=True).fill("matti.browser@example")  # no dot in the domain
    await page.get_by_label("Message", exact=True).fill("Soittakaa <minulle> & pian.\nKiitos!")
    await page.get_by_label(MARKETING_TEXT, exact=True).check()
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.title() == "Your message was not sent"
    assert page.url == f"{base}/v1/forms/website-contact"  # no value in a URL
    assert await page.get_by_label("Name", exact=True).input_value() == "Matti Meikäläinen"
    assert await page.get_by_label("E-mail", exact=True).input_value() == "matti.browser@example"
    message = await page.get_by_label("Message", exact=True).input_value()
    assert message == "Soittakaa <minulle> & pian.\nKiitos!"
    assert await page.get_by_label(MARKETING_TEXT, exact=True).is_checked()
    await page.get_by_label("E-mail", exact=True).fill("matti.browser@example.fi")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.title() == "Thank you"
    assert await _stored(dsn, "matti.browser@example.fi") == {
        "name": "Matti Meikäläinen",
        "marketing_allowed": True,
    }


async def _stored(dsn: str, email: str) -> dict | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT name, marketing_allowed FROM crm.contacts WHERE email = $1", email)
    finally:
        await conn.close()
    return None if row is None else dict(row)


# The form embedded in another website with `ingest form-snippet` (issue 15 §5).


@pytest.fixture(scope="module")
def site(live, site_port: int) -> Iterator[str]:
    """A website on another origin whose pages embed the snippets; yields its base URL."""
    import threading
    import tomllib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ingest import snippet
    from ingest.config import parse_config

    base, _ = live
    origin = f"http://127.0.0.1:{site_port}"
    raw = tomllib.loads(LIVE_CONFIG_TOML + _embedded_sources(origin))
    config = parse_config(raw, secrets_environ() | {"PARTNER_FORMS_SECRET": PARTNER_SECRET})
    pages = {
        f"/{name}.html": "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Our site</title>"
        f"</head><body><h1>Contact</h1>{snippet.render(config, config.sources[name], public_url=base)}"
        "</body></html>"
        for name in ("website-embedded", "website-strict")
    } | {"/thanks.html": "<!doctype html><title>Site thanks</title><p>Thanks!</p>"}

    class Site(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((body or "not found").encode())

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", site_port), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield origin
    server.shutdown()
    server.server_close()


async def _fill(page, email: str) -> None:
    await page.get_by_label("Name", exact=True).fill("Embedded Person")
    await page.get_by_label("E-mail", exact=True).fill(email)
    await page.get_by_label("Message", exact=True).fill("Sent from the website.")


async def _stamp_fetched(page) -> None:
    await page.wait_for_function("document.querySelector('input[name=_rendered_at]').value !== ''")


async def test_a_person_on_the_website_sends_the_embedded_form_and_lands_on_its_thanks_page(live, site, page):
    _, dsn = live
    await page.goto(f"{site}/website-embedded.html")
    assert await page.title() == "Our site"
    await _stamp_fetched(page)  # fetched from the service across origins (CORS)
    await _fill(page, "embedded.person@example.fi")
    await page.get_by_label(MARKETING_TEXT, exact=True).check()
    await asyncio.sleep(1.5)  # longer than the source's 1 s: a person reads and types
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url(f"{site}/thanks.html")
    # The embedded sources keep the html default, double opt-in: the ticked box waits for
    # the person's mailed confirmation, with a confirmation mail queued.
    assert await _stored(dsn, "embedded.person@example.fi") == {
        "name": "Embedded Person",
        "marketing_allowed": False,
    }
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ingest.pending_consents") == 1
        assert await conn.fetchval("SELECT count(*) FROM ingest.outbox WHERE kind = 'confirm'") == 1
    finally:
        await conn.close()


async def test_an_embedded_form_sent_at_once_looks_sent_but_is_not_stored(live, site, page):
    _, dsn = live
    await page.goto(f"{site}/website-strict.html")
    await _stamp_fetched(page)
    await _fill(page, "instant.bot@example.fi")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url(f"{site}/thanks.html")  # a bot must not learn it was caught
    assert await _stored(dsn, "instant.bot@example.fi") is None


async def test_an_embedded_form_without_its_stamp_comes_back_filled_in_and_can_be_sent(live, site, page):
    base, dsn = live
    await page.route("**/stamp", lambda route: route.abort())  # the script could not fetch one
    await page.goto(f"{site}/website-embedded.html")
    await _fill(page, "no.script@example.fi")
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    assert await page.title() == "Your message was not sent"
    assert page.url == f"{base}/v1/forms/website-embedded"
    assert "could not be checked" in await page.get_by_role("alert").inner_text()
    assert await page.get_by_label("E-mail", exact=True).input_value() == "no.script@example.fi"
    assert await _stored(dsn, "no.script@example.fi") is None
    await asyncio.sleep(1.5)  # the fresh stamp of this page ages like a person's
    await page.get_by_role("button", name="Send").click()
    await page.wait_for_load_state()
    # Sent from the service's own page: no public_url, so its own thank-you page.
    assert await page.title() == "Thank you"
    assert (await _stored(dsn, "no.script@example.fi") or {}).get("name") == "Embedded Person"
