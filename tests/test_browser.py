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
    quote_db_name,
    server_env,
    start_server,
    wait_ready,
    with_database,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "example-form.png"


@pytest.fixture(scope="module")
def live(server_dsn: str, template_db: str, tmp_path_factory) -> Iterator[tuple[str, str]]:
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

    assert shutil.which(CHROMIUM), "Debian's chromium is installed by .ci/run (apt-get install chromium)"
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
    await page.get_by_role("link", name="Back to the form").click()
    await page.wait_for_load_state()
    assert await page.title() == "Contact us"
