"""`ingest form-snippet` and the fill-time stamp an embedded form carries (issue 15 §5)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest

from ingest import snippet
from ingest.adapters.html import STAMP_REFUSED, make_stamp, stamp_key
from ingest.errors import ConfigError
from tests.support import MARKETING_TEXT, ORIGIN, PEPPER, ROOT, base_config_dict, make_config

URL = "/v1/forms/website-contact"
PUBLIC = "https://ingest.example.com"
JSON = {"Origin": ORIGIN, "Accept": "application/json"}
WORDS = "Kyllä, lähettäkää minulle uutisia <sähköpostilla> & muuta."


def _config(min_fill: float | None = None, words: str = MARKETING_TEXT, public_url: str | None = PUBLIC):
    raw = base_config_dict()
    raw["consents"]["marketing-email-v1"]["text"] = words
    if public_url:
        raw["public_url"] = public_url
    if min_fill is not None:
        raw["sources"]["website-contact"]["min_fill_seconds"] = min_fill
    return make_config(raw)


class _Form(HTMLParser):
    """The snippet's form as a browser would submit it: its fields, hidden ones and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str] = {}
        self.fields: dict[str, dict[str, str | None]] = {}
        self.hidden_blocks = 0
        self.labels: list[str] = []
        self._label = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self.form = {k: v or "" for k, v in named.items()}
        elif tag in ("input", "textarea") and named.get("name"):
            self.fields[str(named["name"])] = named
        elif tag == "div" and "hidden" in named:
            self.hidden_blocks += 1
        elif tag == "label":
            self._label = True
            self.labels.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label = False

    def handle_data(self, data: str) -> None:
        if self._label:
            self.labels[-1] += data


def _parse(text: str) -> _Form:
    form = _Form()
    form.feed(text)
    return form


def test_the_snippet_posts_to_the_absolute_address_with_the_configured_words_verbatim():
    config = _config(words=WORDS)
    text = snippet.render(config, config.sources["website-contact"])
    form = _parse(text)
    assert form.form["action"] == f"{PUBLIC}{URL}"
    assert form.form["method"] == "post"
    assert form.form["data-stamp-url"] == f"{PUBLIC}{URL}/stamp"
    assert WORDS in form.labels  # the exact configured words, escaped in the HTML only
    assert "Kyllä, lähettäkää minulle uutisia &lt;sähköpostilla&gt; &amp; muuta." in text
    assert form.fields["marketing"]["type"] == "checkbox"
    assert "checked" not in form.fields["marketing"]  # never ticked in advance


def test_the_snippet_says_the_consent_words_must_stay_as_configured():
    config = _config()
    text = snippet.render(config, config.sources["website-contact"])
    comment = text[: text.index("-->")]
    assert "The consent wording must stay exactly as configured (marketing-email-v1)" in comment
    assert "add a\n  new consent id" in comment
    assert "--" not in comment[4:]  # a valid HTML comment


def test_the_snippet_needs_no_style_the_honeypot_is_hidden_and_the_stamp_is_empty():
    config = _config()
    text = snippet.render(config, config.sources["website-contact"])
    form = _parse(text)
    assert "<style>" not in text
    assert " style=" not in text  # no inline style attribute a site's CSP would block
    assert form.hidden_blocks == 1
    assert "_gotcha" in form.fields
    assert form.fields["_rendered_at"] == {"type": "hidden", "name": "_rendered_at", "value": ""}
    # Ids are prefixed: they live on the website's page among its own.
    assert 'id="qd-website-contact-f-email"' in text
    with_style = snippet.render(config, config.sources["website-contact"], style=True)
    assert f"<style>{snippet.STYLE}</style>" in with_style
    assert f"style-src {snippet.csp_hash(snippet.STYLE)}" in with_style


def test_the_snippets_script_is_the_one_whose_hash_the_comment_gives():
    config = _config()
    text = snippet.render(config, config.sources["website-contact"])
    [script] = re.findall(r"<script>(.*?)</script>", text, re.DOTALL)
    assert script == snippet.SCRIPT
    assert f"script-src {snippet.csp_hash(script)}" in text
    assert f"connect-src {PUBLIC}" in text
    assert f"form-action {PUBLIC} {ORIGIN}" in text
    # The script follows the form directly: it finds its form as its previous sibling.
    assert re.search(r"</form>\s*<script>", text)


def test_the_snippet_needs_public_url_and_an_html_source():
    config = _config(public_url=None)
    with pytest.raises(ConfigError, match=r"^public_url: required"):
        snippet.render(config, config.sources["website-contact"])
    text = snippet.render(config, config.sources["website-contact"], public_url="https://x.example/")
    assert 'action="https://x.example/v1/forms/website-contact"' in text
    with pytest.raises(ConfigError, match="html only"):
        snippet.render(config, config.sources["partner-forms"])


def test_the_snippet_says_when_the_fill_time_check_is_off():
    off = _config()
    assert "the fill-time check is OFF" in snippet.render(off, off.sources["website-contact"])
    on = _config(min_fill=3)
    assert "min_fill_seconds = 3" in snippet.render(on, on.sources["website-contact"])


def test_the_form_snippet_command_prints_the_snippet_without_any_secret(tmp_path):
    config = tmp_path / "ingest.toml"
    example = (ROOT / "deploy" / "ingest.example.toml").read_text()
    config.write_text(f'public_url = "{PUBLIC}"\n' + example)
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(config), "form-snippet", "website-contact"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},  # no PARTNER_FORMS_SECRET: the snippet verifies nothing
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f'action="{PUBLIC}{URL}"' in result.stdout
    assert "Yes, send me QualityDesk news by e-mail." in result.stdout
    assert "min_fill_seconds is not set: the fill-time check is off" in result.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(config), "form-snippet", "nope"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 2
    assert "sources.nope: no such source" in unknown.stderr


# The stamp: what an embedded form fetches and posts back.


async def test_the_stamp_is_served_to_the_sources_own_origins_only(make_client):
    client = await make_client(_config(min_fill=3))
    allowed = await client.get(f"{URL}/stamp", headers={"Origin": ORIGIN})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Cache-Control"] == "no-store"
    assert re.fullmatch(r"[0-9]+\.[A-Za-z0-9_-]+", (await allowed.json())["stamp"])
    other = await client.get(f"{URL}/stamp", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    for path in ("/v1/forms/partner-forms/stamp", "/v1/forms/nope/stamp"):
        missing = await client.get(path)
        assert missing.status == 404
        assert await missing.json() == {"error": "unknown_source"}


def _snippet_post(config, **values: str) -> dict[str, str]:
    """Fill in the snippet's form like a person: every field it has, the honeypot left empty."""
    form = _parse(snippet.render(config, config.sources["website-contact"]))
    data = {
        name: str(field.get("value") or "")
        for name, field in form.fields.items()
        if field.get("type") != "checkbox"
    }
    return data | values


async def test_a_snippet_form_filled_like_a_person_is_stored(make_client, db):
    config = _config(min_fill=0.5)
    client = await make_client(config)
    stamp = (await (await client.get(f"{URL}/stamp", headers={"Origin": ORIGIN})).json())["stamp"]
    await asyncio.sleep(1.0)  # the person types (a slower machine only makes this longer)
    data = _snippet_post(config, _rendered_at=stamp, email="person@example.fi", marketing="on")
    response = await client.post(URL, data=data, headers=JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT email FROM crm.contacts") == "person@example.fi"


async def test_a_snippet_form_posted_at_once_looks_like_success_but_is_not_stored(make_client, db):
    config = _config(min_fill=30)
    client = await make_client(config)
    stamp = (await (await client.get(f"{URL}/stamp", headers={"Origin": ORIGIN})).json())["stamp"]
    response = await client.post(
        URL, data=_snippet_post(config, _rendered_at=stamp, email="b@example.fi"), headers=JSON
    )
    assert response.status == 201
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


@pytest.mark.parametrize(
    "stamp",
    [
        None,  # the script did not run (or the field was dropped)
        "",  # the snippet as pasted, stamp never fetched
        "1700000000",  # the old form's unsigned Unix time, pasted once as a constant
        "1700000000000.AAAAAAAAAAAAAAAAAAAAAA",  # a made-up signature
        "stale",  # a genuine stamp, but older than a day
        "other-source",  # a genuine stamp of another source
        "future",  # a genuine stamp from a minute ahead
    ],
)
async def test_a_post_without_a_genuine_stamp_is_refused_not_passed_as_a_person(make_client, db, stamp):
    config = _config(min_fill=3)
    client = await make_client(config)
    key = stamp_key(PEPPER)
    made = {
        "stale": make_stamp(key, "website-contact", time.time() - 5 * 3600),
        "other-source": make_stamp(key, "partner-forms", time.time() - 60),
        "future": make_stamp(key, "website-contact", time.time() + 60),
    }
    data = _snippet_post(config, email="b@example.fi")
    if stamp is None:
        del data["_rendered_at"]
    else:
        data["_rendered_at"] = made.get(stamp, stamp)
    response = await client.post(URL, data=data, headers=JSON)
    assert response.status == 422
    assert await response.json() == {"error": "validation_failed", "fields": {"form": [STAMP_REFUSED]}}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_stamp_signed_with_another_pepper_is_not_genuine(make_client, db):
    config = _config(min_fill=3)
    client = await make_client(config)
    forged = make_stamp(
        stamp_key("another-pepper-0123456789abcdef-0123"), "website-contact", time.time() - 60
    )
    response = await client.post(
        URL, data=_snippet_post(config, _rendered_at=forged, email="b@example.fi"), headers=JSON
    )
    assert response.status == 422


async def test_a_browser_without_a_stamp_gets_the_form_again_filled_in_with_a_fresh_stamp(make_client, db):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["min_fill_seconds"] = 3
    del raw["sources"]["website-contact"]["error_url"]
    client = await make_client(make_config(raw))
    data = {"email": "person@example.fi", "message": "Hello", "_rendered_at": ""}
    response = await client.post(URL, data=data, headers={"Origin": ORIGIN, "Accept": "text/html"})
    assert response.status == 422
    page = await response.text()
    assert STAMP_REFUSED in page
    assert 'value="person@example.fi"' in page
    [fresh] = re.findall(r'name="_rendered_at" value="([^"]+)"', page)
    assert re.fullmatch(r"[0-9]+\.[A-Za-z0-9_-]+", fresh)
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_the_422_page_keeps_a_genuine_stamp_so_the_time_already_spent_counts(make_client):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["min_fill_seconds"] = 3
    del raw["sources"]["website-contact"]["error_url"]
    client = await make_client(make_config(raw))
    aged = make_stamp(stamp_key(PEPPER), "website-contact", time.time() - 60)
    data = {"phone": "123", "_rendered_at": aged}
    response = await client.post(URL, data=data, headers={"Origin": ORIGIN, "Accept": "text/html"})
    assert response.status == 422
    assert f'name="_rendered_at" value="{aged}"' in await response.text()


async def test_the_service_form_page_carries_a_genuine_stamp(make_client, db):
    config = _config(min_fill=0.5, public_url=None)
    client = await make_client(config)
    page = await (await client.get(URL)).text()
    [stamp] = re.findall(r'name="_rendered_at" value="([^"]+)"', page)
    await asyncio.sleep(1.0)
    response = await client.post(URL, data={"email": "p@example.fi", "_rendered_at": stamp}, headers=JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 1


@pytest.mark.parametrize(
    "address",
    [
        'https://ingest.example.com/x"><img src=x onerror=alert(1)>',
        "https://a.example/--->\\<script>x</script>",
        "https://ingest.example.com/?next=1",
        "javascript:alert(1)",
    ],
)
def test_a_public_address_that_could_be_read_as_markup_is_refused(address):
    source = _config().sources["website-contact"]
    with pytest.raises(ConfigError, match="public"):
        snippet.render(_config(), source, public_url=address)
    raw = base_config_dict()
    raw["public_url"] = address
    with pytest.raises(ConfigError, match="public_url"):
        make_config(raw)


def test_no_text_of_the_comment_can_close_it_early():
    comment = snippet._comment(["a --->", "b ---->", "-->", "c"])
    body = comment.removeprefix("<!--").removesuffix("-->")
    assert "--" not in body
    assert body.count(">") == 3
