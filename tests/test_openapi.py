"""The OpenAPI document covers every route, and docs/api.md is its current rendering."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from openapi_spec_validator import validate

from ingest.adapters import ADAPTERS
from ingest.config import load_config, parse_config
from ingest.web.app import create_app
from ingest.web.openapi import SIGNATURES, build_spec, render_markdown
from tests.support import PARTNER_SECRET, secrets_environ
from tests.test_fuzz import FUZZ_CONFIG_TOML, SHARED_SECRET

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "ingest.example.toml"
ENV = {"PARTNER_FORMS_SECRET": PARTNER_SECRET}
FUZZ_CONFIG = parse_config(
    tomllib.loads(FUZZ_CONFIG_TOML), secrets_environ() | {"FUZZ_SHARED_SECRET": SHARED_SECRET}
)


def example_spec() -> dict:
    return build_spec(load_config(EXAMPLE, ENV))


def _served(config) -> set[tuple[str, str]]:
    """(method, concrete path) of every route, a {kind}/{source} one for each source it serves."""
    app = create_app(config, "postgresql://unused", "pepper")
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:  # HEAD: added by aiohttp beside each GET
            continue
        info = route.resource.get_info()
        if "pattern" not in info:
            routes.add((route.method.lower(), route.resource.canonical))
            continue
        for name, source in config.sources.items():
            if route.method == "GET" and source.format != "html":
                continue  # the example form (and its stamp) refuses other sources itself
            kind = "forms" if source.channel == "form" else "chats"
            concrete = route.resource.canonical.replace("{kind}", kind).replace("{source}", name)
            if info["pattern"].fullmatch(concrete):  # /v1/{kind:forms}/... serves forms only
                routes.add((route.method.lower(), concrete))
    return routes


def test_every_route_the_service_answers_is_in_the_openapi_document():
    config = load_config(EXAMPLE, ENV)
    documented = {(method, path) for path, ops in build_spec(config)["paths"].items() for method in ops}
    served = _served(config)
    assert served - documented == set()
    assert documented - served == set()
    assert ("post", "/v1/forms/website-contact") in served


def test_every_error_response_names_its_machine_readable_body():
    for path, operations in example_spec()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and "application/json" in response.get("content", {}):
                    schema = response["content"]["application/json"]["schema"]["$ref"]
                    assert schema.endswith(("/Error", "/ValidationError")), (method, path, status)


def test_docs_api_md_is_the_rendering_of_the_current_document():
    # Regenerate with: ingest --config deploy/ingest.example.toml openapi --markdown > docs/api.md
    assert (ROOT / "docs" / "api.md").read_text() == render_markdown(example_spec())


def test_the_cli_prints_the_document_the_service_serves():
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(EXAMPLE), "openapi"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV},
        check=True,
    )
    assert json.loads(result.stdout) == example_spec()


def test_the_document_is_valid_openapi_3_1_for_the_example_and_for_every_format():
    validate(example_spec())
    validate(build_spec(FUZZ_CONFIG))  # every provider format, as fuzzed in tests/test_fuzz.py


def test_every_adapter_has_its_signature_described_and_every_signed_source_requires_it():
    assert set(SIGNATURES) == set(ADAPTERS)
    document = build_spec(FUZZ_CONFIG)
    schemes = document["components"]["securitySchemes"]
    for name, source in FUZZ_CONFIG.sources.items():
        kind = "forms" if source.channel == "form" else "chats"
        post = document["paths"][f"/v1/{kind}/{name}"]["post"]
        names = {n for requirement in post.get("security", []) for n in requirement}
        described = {(schemes[n]["in"], schemes[n]["name"].lower()) for n in names}
        if source.format in ("html", "livechat"):  # an Origin check; a key in the body
            assert names == set(), name
        elif source.format in ("json", "hubspot"):
            assert {h for _, h in described} == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        elif source.format == "jotform" or (source.format == "crisp" and "hook" not in source.options):
            assert described == {("query", "key")}, name
        else:
            assert described and all(where == "header" for where, _ in described), name
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert document["paths"]["/v1/subjects"]["get"]["security"] == [{"bearer": []}]


def test_only_configured_sources_have_intake_paths_each_with_its_own_content_types():
    document = build_spec(FUZZ_CONFIG)
    intake = {p for p in document["paths"] if p.startswith(("/v1/forms/", "/v1/chats/"))}
    expected = {
        f"/v1/{'forms' if s.channel == 'form' else 'chats'}/{n}" for n, s in FUZZ_CONFIG.sources.items()
    }
    assert intake - expected == {"/v1/forms/website-contact/stamp"}
    for name, source in FUZZ_CONFIG.sources.items():
        kind = "forms" if source.channel == "form" else "chats"
        content = document["paths"][f"/v1/{kind}/{name}"]["post"]["requestBody"]["content"]
        assert set(content) == set(ADAPTERS[source.format].content_types), name


def test_email_or_phone_is_stated_as_any_of_required_where_one_is_needed():
    schemas = example_spec()["components"]["schemas"]
    either = [{"required": ["email"]}, {"required": ["phone"]}]
    assert schemas["OptOut"]["anyOf"] == either
    assert schemas["CanonicalFormSubmission"]["anyOf"] == either
    assert schemas["website-contact.form"]["anyOf"] == either
    assert "anyOf" not in schemas["CanonicalChatSubmission"]  # a chat without them is ignored (202)
    for method in ("get", "delete"):
        for parameter in example_spec()["paths"]["/v1/subjects"][method]["parameters"]:
            assert "At least one of `email` and `phone`" in parameter["description"]


def test_the_preflight_is_documented_as_the_204_it_answers():
    preflight = example_spec()["paths"]["/v1/forms/website-contact"]["options"]
    assert set(preflight["responses"]) == {"204", "403"}
    assert preflight["parameters"][0]["schema"]["enum"] == ["https://www.qualitydesk.com"]
