"""The admin API: data subject rights behind bearer tokens with scopes (the link pages: link_pages.py)."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from ingest import errors, rights
from ingest.adapters.bodies import parse_json_object, text_bytes
from ingest.web.inputs import bounded, client_address, read_body
from ingest.web.keys import CONFIG, LIMITER, LOG_INFO, PEPPER, POOL


def authorize(request: web.Request, scope: str) -> str:
    """The name of the bearer token if it is valid and has `scope`; else 401/403 (429 after many 401s)."""
    failures = request.app[LIMITER].admin_failures
    client = client_address(request, request.app[CONFIG].limits.trusted_proxy_hops)
    failures.check(client)  # an address that keeps guessing is refused before any comparison
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        failures.spend(client)
        raise errors.Unauthorized
    digest = hashlib.sha256(text_bytes(token.strip())).digest()
    matched = None
    for candidate in request.app[CONFIG].admin_tokens:
        # Every token is compared, so timing does not tell which one (if any) was close.
        if hmac.compare_digest(candidate.sha256, digest):
            matched = candidate
    if matched is None:
        failures.spend(client)
        raise errors.Unauthorized
    request[LOG_INFO]["token_name"] = matched.name
    if scope not in matched.scopes:
        raise errors.Forbidden
    return matched.name


def _subject(request: web.Request) -> rights.Subject:
    return rights.subject_from(request.app[CONFIG], request.query.get("email"), request.query.get("phone"))


async def export_subject(request: web.Request) -> web.Response:
    """GET /v1/subjects?email=|phone=: everything held on the person."""
    actor = authorize(request, "export")
    document = await bounded(
        request, rights.export(request.app[POOL], _subject(request), request.app[PEPPER], actor)
    )
    return web.json_response(document)


async def erase_subject(request: web.Request) -> web.Response:
    """DELETE /v1/subjects?email=|phone=: erase the person, report what was removed."""
    actor = authorize(request, "erase")
    report = await bounded(
        request, rights.erase(request.app[POOL], _subject(request), request.app[PEPPER], actor)
    )
    return web.json_response({"status": "erased", "removed": report})


async def opt_out_subject(request: web.Request) -> web.Response:
    """POST /v1/subjects/opt-out {"email"|"phone"}: direct-marketing objection."""
    actor = authorize(request, "opt-out")
    config = request.app[CONFIG]
    body = await read_body(request, config.limits.max_body_bytes, config.limits.body_timeout_seconds)
    payload = parse_json_object(body)
    subject = rights.subject_from(config, payload.get("email"), payload.get("phone"))
    report = await bounded(request, rights.opt_out(request.app[POOL], subject, request.app[PEPPER], actor))
    return web.json_response({"status": "opted_out", "recorded": report})


def add_routes(app: web.Application) -> None:
    """Register the admin API's routes."""
    app.router.add_get("/v1/subjects", export_subject)
    app.router.add_delete("/v1/subjects", erase_subject)
    app.router.add_post("/v1/subjects/opt-out", opt_out_subject)
