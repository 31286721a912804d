"""The OpenAPI document covers every route, and docs/api.md is its current rendering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ingest.config import load_config
from ingest.web.app import create_app
from ingest.web.openapi import build_spec, render_markdown
from tests.support import PARTNER_SECRET

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "ingest.example.toml"
ENV = {"PARTNER_FORMS_SECRET": PARTNER_SECRET}


def example_spec() -> dict:
    return build_spec(load_config(EXAMPLE, ENV))


def test_every_route_the_service_answers_is_in_the_openapi_document():
    app = create_app(load_config(EXAMPLE, ENV), "postgresql://unused", "pepper")
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # added by aiohttp beside each GET
            continue
        path = route.resource.canonical if route.resource else ""
        kinds = ["forms", "chats"] if "{kind}" in path else [None]
        if route.method == "GET" and path == "/v1/{kind}/{source}":
            kinds = ["forms"]  # the example form page exists for forms only
        for kind in kinds:
            routes.add((route.method.lower(), path.replace("{kind}", kind) if kind else path))
    documented = {(method, path) for path, ops in example_spec()["paths"].items() for method in ops}
    assert routes - documented == set()
    assert documented - routes == set()


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
