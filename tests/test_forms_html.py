"""Browser form posts to an html source: DESIGN §3 rows and the browser redirects."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.support import MARKETING_TEXT, ORIGIN, base_config_dict, make_config, with_double_opt_in

URL = "/v1/forms/website-contact"
FORM = {
    "name": "Maija Meikäläinen",
    "email": "maija@example.fi",
    "phone": "040 123 4567",
    "message": "Please call me.",
}
JSON = {"Origin": ORIGIN, "Accept": "application/json"}
BROWSER = {"Origin": ORIGIN, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def test_a_browser_post_is_stored_and_redirected_to_the_thanks_page(client, db):
    response = await client.post(URL, data=FORM, headers=BROWSER, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"{ORIGIN}/thanks"
    row = await db.fetchrow("SELECT name, email, phone FROM crm.contacts")
    assert dict(row) == {"name": "Maija Meikäläinen", "email": "maija@example.fi", "phone": "+358401234567"}


async def test_a_script_asking_for_json_gets_201_with_the_submission_id(client, db):
    response = await client.post(URL, data=FORM, headers=JSON)
    assert response.status == 201
    body = await response.json()
    assert body["status"] == "created"
    stored = await db.fetchval("SELECT submission_id::text FROM crm.submissions")
    assert body["submission_id"] == stored
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_multipart_forms_are_accepted(client, db):
    import aiohttp

    data = aiohttp.FormData()
    for key, value in FORM.items():
        data.add_field(key, value)
    response = await client.post(URL, data=data, headers=JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT message FROM crm.submissions") == "Please call me."


async def test_file_parts_are_refused_and_nothing_is_stored(client, db):
    import aiohttp

    data = aiohttp.FormData()
    data.add_field("email", "maija@example.fi")
    data.add_field("cv", b"%PDF-1.4", filename="cv.pdf", content_type="application/pdf")
    response = await client.post(URL, data=data, headers=JSON)
    assert response.status == 422
    assert (await response.json())["error"] == "validation_failed"
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


@pytest.mark.parametrize("origin", [None, "https://evil.example", "null"])
async def test_a_post_from_another_origin_is_refused_with_403(client, db, origin):
    headers = {"Accept": "application/json"} | ({"Origin": origin} if origin else {})
    response = await client.post(URL, data=FORM, headers=headers)
    assert response.status == 403
    assert await response.json() == {"error": "origin_not_allowed"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_filled_honeypot_looks_like_success_but_stores_nothing(client, db):
    response = await client.post(URL, data=FORM | {"_gotcha": "http://spam"}, headers=JSON)
    assert response.status == 201
    body = await response.json()
    assert body["status"] == "created"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM ingest.submissions WHERE submission_id = $1::uuid", body["submission_id"]
        )
        == 0
    )
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_filled_honeypot_is_counted_and_logged_as_a_decoy_never_as_created(client, log_output):
    response = await client.post(URL, data=FORM | {"_gotcha": "http://spam"}, headers=JSON)
    assert response.status == 201  # the bot still sees a success
    metrics = await (await client.get("/metrics")).text()
    outcomes = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ingest_submissions_total{")
    }
    assert outcomes == {"decoy": 1.0}
    [line] = [
        json.loads(x) for x in log_output.getvalue().splitlines() if '"route": "/v1/{kind}/{source}"' in x
    ]
    assert (line["outcome"], line["reason"], line["status"]) == ("decoy", "honeypot", 201)


async def test_a_filled_honeypot_redirects_a_browser_like_success(client, db):
    response = await client.post(URL, data=FORM | {"_gotcha": "x"}, headers=BROWSER, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"{ORIGIN}/thanks"
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_invalid_fields_get_422_naming_the_field_without_echoing_the_value(client):
    response = await client.post(URL, data=FORM | {"email": "not-an-address"}, headers=JSON)
    assert response.status == 422
    body = await response.json()
    assert body == {"error": "validation_failed", "fields": {"email": ["Not a valid e-mail address."]}}
    assert "not-an-address" not in await response.text()


async def test_a_browser_with_invalid_fields_goes_to_the_error_page_with_the_code(client):
    response = await client.post(URL, data=FORM | {"email": "x"}, headers=BROWSER, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"{ORIGIN}/oops?error=validation_failed"


async def test_a_form_without_email_or_phone_is_refused(client, db):
    response = await client.post(URL, data={"name": "Maija", "message": "hi"}, headers=JSON)
    assert response.status == 422
    body = await response.json()
    assert set(body["fields"]) == {"email", "phone"}
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_a_phone_alone_is_enough(client, db):
    response = await client.post(URL, data={"phone": "+358 40 123 4567"}, headers=JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT phone FROM crm.contacts WHERE email IS NULL") == "+358401234567"


async def test_an_unsupported_content_type_gets_415(client):
    response = await client.post(
        URL, data=b'{"email":"a@b.fi"}', headers=JSON | {"Content-Type": "application/json"}
    )
    assert response.status == 415
    assert await response.json() == {"error": "unsupported_media_type"}


async def test_an_unknown_charset_gets_415(client):
    response = await client.post(
        URL,
        data=b"email=a%40example.fi",
        headers=JSON | {"Content-Type": "application/x-www-form-urlencoded; charset=klingon"},
    )
    assert response.status == 415


@pytest.mark.parametrize("name", [b"Z%E9ta M%E4kinen", b"Z\xe9ta M\xe4kinen"])
async def test_a_latin_1_form_is_read_in_latin_1_escaped_or_not(client, db, name):
    response = await client.post(
        URL,
        data=b"email=a%40example.fi&name=" + name,
        headers=JSON | {"Content-Type": "application/x-www-form-urlencoded; charset=ISO-8859-1"},
    )
    assert response.status == 201
    assert await db.fetchval("SELECT name FROM crm.contacts") == "Zéta Mäkinen"


async def test_a_body_that_is_not_utf8_gets_400(client):
    response = await client.post(
        URL, data=b"email=\xff\xfe", headers=JSON | {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}


async def test_a_body_over_the_limit_gets_413(client, db):
    response = await client.post(URL, data={"email": "a@example.fi", "message": "x" * 70_000}, headers=JSON)
    assert response.status == 413
    assert await response.json() == {"error": "payload_too_large"}


@pytest.mark.parametrize("url", ["/v1/forms/nope", "/v1/chats/website-contact"])
async def test_unknown_sources_and_wrong_channels_get_404(client, url):
    response = await client.post(url, data=FORM, headers=JSON)
    assert response.status == 404
    assert await response.json() == {"error": "unknown_source"}


async def test_a_ticked_marketing_box_waits_for_the_person_to_confirm_it_by_mail(make_client, db):
    # Double opt-in (DESIGN §8): an html form cannot prove who owns the address, so the
    # grant waits, with its words' hash, and a confirmation mail is queued in the same
    # transaction; nothing is granted, and no purpose added, until the link is used.
    client = await make_client(make_config(with_double_opt_in(base_config_dict())))
    response = await client.post(URL, data=FORM | {"marketing": "on"}, headers=JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT count(*) FROM ingest.consent_events WHERE granted") == 0
    pending = await db.fetchrow(
        "SELECT consent_id, purpose, text_sha256, source, notice_version FROM ingest.pending_consents"
    )
    assert dict(pending) == {
        "consent_id": "marketing-email-v1",
        "purpose": "direct_marketing",
        "text_sha256": hashlib.sha256(MARKETING_TEXT.encode()).hexdigest(),
        "source": "website-contact",
        "notice_version": "2024-01",
    }
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    assert await db.fetch("SELECT * FROM crm.consents WHERE granted") == []
    assert await db.fetchval("SELECT purposes FROM crm.submissions") == ["contact", "customer_relationship"]
    mail = await db.fetchrow("SELECT kind, recipient, state FROM ingest.outbox")
    assert dict(mail) == {"kind": "confirm", "recipient": FORM["email"], "state": "queued"}


async def test_a_ticked_box_on_a_source_exempt_from_double_opt_in_records_the_grant_at_once(make_client, db):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["double_opt_in"] = False
    client = await make_client(make_config(raw))
    response = await client.post(URL, data=FORM | {"marketing": "on"}, headers=JSON)
    assert response.status == 201
    event = await db.fetchrow(
        "SELECT consent_id, granted, text_sha256, source, notice_version FROM ingest.consent_events"
    )
    assert dict(event) == {
        "consent_id": "marketing-email-v1",
        "granted": True,
        "text_sha256": hashlib.sha256(MARKETING_TEXT.encode()).hexdigest(),
        "source": "website-contact",
        "notice_version": "2024-01",
    }
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is True
    state = await db.fetchrow("SELECT purpose, granted, consent_id FROM crm.consents")
    assert dict(state) == {"purpose": "direct_marketing", "granted": True, "consent_id": "marketing-email-v1"}
    purposes = await db.fetchval("SELECT purposes FROM crm.submissions")
    assert purposes == ["contact", "customer_relationship", "direct_marketing"]
    # The grant is recorded: the person gets a receipt.
    assert await db.fetchval("SELECT kind FROM ingest.outbox") == "receipt"


async def test_an_unticked_marketing_box_records_a_refusal_and_marketing_stays_off(client, db):
    response = await client.post(URL, data=FORM, headers=JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT granted FROM ingest.consent_events") is False
    assert await db.fetchval("SELECT marketing_allowed FROM crm.contacts") is False
    assert await db.fetchval("SELECT purposes FROM crm.submissions") == ["contact", "customer_relationship"]


async def test_purposes_carry_their_lawful_basis(make_client, db):
    raw = base_config_dict()
    raw["sources"]["website-contact"]["double_opt_in"] = False  # the grant counts at once
    client = await make_client(make_config(raw))
    await client.post(URL, data=FORM | {"marketing": "on"}, headers=JSON)
    rows = await db.fetch("SELECT purpose, lawful_basis FROM ingest.submission_purposes ORDER BY purpose")
    assert [tuple(r) for r in rows] == [
        ("contact", "legitimate_interest"),
        ("customer_relationship", "legitimate_interest"),
        ("direct_marketing", "consent"),
    ]


async def test_the_same_person_twice_is_one_contact_with_two_submissions(client, db):
    await client.post(URL, data=FORM, headers=JSON)
    await client.post(URL, data=FORM | {"email": "Maija@EXAMPLE.FI", "message": "Again"}, headers=JSON)
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 1
    assert await db.fetchval("SELECT count(*) FROM crm.submissions") == 2


async def test_a_cors_preflight_from_an_allowed_origin_is_answered(client):
    response = await client.options(URL, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_multipart_headers_that_would_take_the_mail_parser_seconds_are_refused_unparsed(client, db):
    # 6,000 parameters on one part header cost email.policy.HTTP seconds of CPU
    # (the event loop stalls for every client): refused before parsing. A hang guard,
    # not a speed measurement.
    import time

    header = b'Content-Disposition: form-data; name="email"\r\nContent-Type: text/plain' + b"; p=1" * 6000
    body = b"--a\r\n" + header + b"\r\n\r\nx@example.fi\r\n--a--\r\n"
    started = time.monotonic()
    response = await client.post(
        URL, data=body, headers=JSON | {"Content-Type": "multipart/form-data; boundary=a"}
    )
    assert response.status == 400
    assert await response.json() == {"error": "malformed_body"}
    assert time.monotonic() - started < 2


# Issue 15 §5: putting the form on a website, the local trial, the 422 page, the controller.


def _config(public_url: str | None = None, **source: object):
    from tests.support import base_config_dict, make_config

    raw = base_config_dict()
    if public_url is not None:
        raw["public_url"] = public_url
    raw["sources"]["website-contact"].update(source)
    for key in [k for k, v in source.items() if v is None]:
        del raw["sources"]["website-contact"][key]
    return make_config(raw)


async def test_with_public_url_the_example_forms_action_is_absolute(make_client):
    client = await make_client(_config("https://ingest.example.com/"))
    page = await (await client.get(URL)).text()
    assert 'action="https://ingest.example.com/v1/forms/website-contact"' in page


async def test_without_public_url_the_example_forms_action_stays_relative(client):
    page = await (await client.get(URL)).text()
    assert f'action="{URL}"' in page


def _own_page(client) -> dict[str, str]:
    # What a browser sends posting the service's own form page: its own origin.
    return {"Origin": f"http://127.0.0.1:{client.port}", "Accept": "text/html"}


async def test_a_local_trial_lands_on_the_services_own_thanks_page_not_the_website(client, db):
    response = await client.post(URL, data=FORM, headers=_own_page(client), allow_redirects=False)
    assert response.status == 201
    assert "Location" not in response.headers
    assert "<title>Thank you</title>" in await response.text()
    assert await db.fetchval("SELECT count(*) FROM crm.contacts") == 1


async def test_a_local_trials_invalid_post_stays_on_the_services_422_page(client):
    response = await client.post(
        URL, data=FORM | {"email": "x"}, headers=_own_page(client), allow_redirects=False
    )
    assert response.status == 422
    assert "Location" not in response.headers


async def test_with_public_url_the_services_own_page_still_goes_to_success_url(make_client):
    client = await make_client(_config("https://ingest.example.com"))
    response = await client.post(URL, data=FORM, headers=_own_page(client), allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == f"{ORIGIN}/thanks"


async def test_the_422_page_re_renders_the_form_with_what_was_typed(make_client, db, log_output):
    client = await make_client(_config(error_url=None))
    typed = FORM | {"phone": "123", "email": "", "marketing": "on", "message": 'Call <me> & "soon"'}
    response = await client.post(URL, data=typed, headers=BROWSER, allow_redirects=False)
    assert response.status == 422
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    page = await response.text()
    assert 'value="Maija Meikäläinen"' in page
    assert 'value="123"' in page
    assert ">Call &lt;me&gt; &amp; &quot;soon&quot;</textarea>" in page
    assert 'name="marketing" value="on" checked>' in page
    assert "Not a valid phone number." in page
    assert "Back to the form" not in page  # the form is on the page itself
    # The re-rendered form posts again with a fresh stamp; nothing typed is in a URL or a log.
    assert 'name="_rendered_at" value="' in page
    assert "Maija" not in response.url.raw_query_string
    assert "Maija" not in log_output.getvalue()
    assert "Call" not in log_output.getvalue()
    assert await db.fetchval("SELECT count(*) FROM ingest.contacts") == 0


async def test_other_refusals_keep_the_back_link(make_client):
    client = await make_client(_config(error_url=None))
    response = await client.post(
        URL, data=FORM, headers=BROWSER | {"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert response.status == 403
    page = await response.text()
    assert f'<a href="{URL}">Back to the form</a>' in page
    assert "Maija" not in page


async def test_the_controller_is_named_from_the_config_on_the_form_and_thanks_pages(make_client):
    from tests.support import base_config_dict, make_config

    raw = base_config_dict()
    raw["controller"] = "Esimerkki & Co Oy"
    del raw["sources"]["website-contact"]["success_url"]
    client = await make_client(make_config(raw))
    form = await (await client.get(URL)).text()
    assert "Esimerkki &amp; Co Oy uses your details only to answer you" in form
    thanks = await client.post(URL, data=FORM, headers=BROWSER)
    assert "Esimerkki &amp; Co Oy will be in touch soon." in await thanks.text()
    assert "QualityDesk" not in form.replace(MARKETING_TEXT, "")


async def test_without_a_controller_the_pages_say_we(client):
    form = await (await client.get(URL)).text()
    assert "We use your details only to answer you and as our privacy notice" in form


@pytest.mark.parametrize("name", ["", "   ", "A\nB", "x" * 201])
def test_a_controller_name_must_be_a_printable_name(name):
    from ingest.errors import ConfigError
    from tests.support import base_config_dict, make_config

    raw = base_config_dict() | {"controller": name}
    with pytest.raises(ConfigError, match=r"^controller: the controller.s name"):
        make_config(raw)


def test_the_record_of_processing_names_the_configured_controller():
    from ingest import ropa
    from tests.support import base_config_dict, make_config

    named = ropa.render(make_config(base_config_dict() | {"controller": "Esimerkki Oy"}))
    assert "Controller: Esimerkki Oy." in named
    assert "The CRM of Esimerkki Oy (entitled staff)" in named
    assert "QualityDesk CRM" not in named
    unnamed = ropa.render(make_config())
    assert "Controller: not configured (set `controller` in the configuration)." in unnamed


def test_a_missing_public_url_is_warned_about_only_when_a_real_website_posts():
    from ingest.web.form_page import public_url_warning

    warning = public_url_warning(_config())
    assert warning is not None
    assert "public_url is not set" in warning
    assert ORIGIN in warning
    assert public_url_warning(_config("https://ingest.example.com")) is None
    assert public_url_warning(_config(allowed_origins=["http://localhost:8000"])) is None


async def test_the_service_warns_at_start_when_public_url_is_missing(make_client, log_output):
    await make_client(_config())
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert any(line.get("event") == "public_url_not_set" for line in lines)
    log_output.truncate(0)
    await make_client(_config("https://ingest.example.com"))
    assert "public_url_not_set" not in log_output.getvalue()
