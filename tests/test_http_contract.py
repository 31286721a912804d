"""The HTTP contract as the OpenAPI document states it: 405 with Allow (RFC 9110), 415, 204."""

from __future__ import annotations

from ingest.adapters import ADAPTERS
from ingest.web.openapi import build_spec
from tests.support import ORIGIN, make_config, sign_standard

CONFIG = make_config()
DOCUMENT = build_spec(CONFIG)
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def documented(path: str) -> set[str]:
    """The methods the document gives a path (HEAD comes with every GET)."""
    methods = {m.upper() for m in DOCUMENT["paths"][path]}
    return methods | ({"HEAD"} if "GET" in methods else set())


def _non_html_form(path: str) -> bool:
    source = CONFIG.sources.get(path.rsplit("/", 1)[-1])
    return path.startswith("/v1/forms/") and source is not None and source.format != "html"


# (path, method) for every method a documented path does not have.
UNDOCUMENTED = [(p, m) for p in DOCUMENT["paths"] for m in METHODS if m not in documented(p)]
# The example-form route answers GET for every form source and refuses a non-html one
# itself, naming the methods that path does have (ingest/web/form_page.py).
FORM_PAGE_GAP = [(p, m) for p, m in UNDOCUMENTED if m in ("GET", "HEAD") and _non_html_form(p)]


async def _check_405(client, path: str, method: str) -> list[str]:
    response = await client.request(method, path)
    allow = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
    problems = []
    if response.status != 405:
        problems.append(f"{method} {path}: {response.status}")
    elif not documented(path) <= allow or method in allow:
        problems.append(f"{method} {path}: Allow {sorted(allow)}")
    elif method != "HEAD" and await response.json() != {"error": "method_not_allowed"}:
        problems.append(f"{method} {path}: body")
    return problems


async def test_every_method_a_path_does_not_have_gets_405_naming_the_methods_it_has(client):
    problems = []
    checked = 0
    for path, method in UNDOCUMENTED:
        if (path, method) not in FORM_PAGE_GAP:
            problems += await _check_405(client, path, method)
            checked += 1
    assert problems == []
    assert checked > 40  # every route of the test config, several methods each


async def test_get_on_a_form_source_without_a_form_page_names_all_its_methods(client):
    assert FORM_PAGE_GAP
    problems = []
    for path, method in FORM_PAGE_GAP:
        problems += await _check_405(client, path, method)
    assert problems == []


async def test_the_allow_header_is_exactly_the_methods_aiohttp_routes_for_the_path(client):
    response = await client.delete("/v1/unsubscribe")
    assert response.status == 405
    assert sorted(response.headers["Allow"].split(",")) == ["GET", "HEAD", "POST"]


def _accepted(path: str) -> set[str]:
    return set(DOCUMENT["paths"][path]["post"]["requestBody"]["content"])


def test_each_source_is_documented_with_exactly_the_content_types_its_adapter_reads():
    for name, source in CONFIG.sources.items():
        kind = "forms" if source.channel == "form" else "chats"
        assert _accepted(f"/v1/{kind}/{name}") == set(ADAPTERS[source.format].content_types), name
    assert _accepted("/v1/forms/website-contact") == {
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    assert _accepted("/v1/forms/partner-forms") == {"application/json"}


async def test_a_content_type_the_document_does_not_list_for_a_source_is_a_415(client):
    as_json = b'{"email": "maija@example.fi"}'
    json_to_html = await client.post(
        "/v1/forms/website-contact",
        data=as_json,
        headers={"Origin": ORIGIN, "Accept": "application/json", "Content-Type": "application/json"},
    )
    as_form = b"email=maija%40example.fi"
    form_to_json = await client.post(
        "/v1/forms/partner-forms",
        data=as_form,
        headers={**sign_standard(as_form), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert json_to_html.status == 415
    assert await json_to_html.json() == {"error": "unsupported_media_type"}
    assert form_to_json.status == 415


async def test_the_preflight_answers_the_documented_204(client):
    assert "204" in DOCUMENT["paths"]["/v1/forms/website-contact"]["options"]["responses"]
    assert "200" not in DOCUMENT["paths"]["/v1/forms/website-contact"]["options"]["responses"]
    response = await client.options(
        "/v1/forms/website-contact", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
