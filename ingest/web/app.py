"""The application factory: routes, middleware, and resources in cleanup_ctx."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import asyncpg
import structlog
from aiohttp import web

from ingest.adapters import check_sources
from ingest.config import Config
from ingest.group_commit import GroupCommitWriter
from ingest.logs import RepeatLimiter
from ingest.metrics import create_metrics
from ingest.service import IngestService
from ingest.store.startup import sync_consent_texts
from ingest.web import access_pages, admin, form_page, health, intake, link_pages, pages
from ingest.web.keys import CONFIG, DSN, LIMITER, METRICS, PEPPER, POOL, REFUSAL_LOG, SERVICE
from ingest.web.limits import Limiter
from ingest.web.mailing import mailing
from ingest.web.maintenance import maintenance
from ingest.web.middleware import request_context
from ingest.web.openapi import build_spec

log = structlog.get_logger("ingest.app")

REFUSAL_LINES_PER_SECOND = 20  # per kind (route, status, error, reason, source) and worker; the rest counted
POOL_CLOSE_SECONDS = 5.0  # at shutdown; past it, connections are terminated


def create_app(config: Config, dsn: str, pepper: str) -> web.Application:
    """Build the aiohttp application; the pool opens and closes with it."""
    app = web.Application(middlewares=[request_context], client_max_size=config.limits.max_body_bytes)
    app[CONFIG] = check_sources(config)  # each adapter's own checks (cheap; normally done at load)
    app[DSN] = dsn
    app[PEPPER] = pepper
    app[METRICS] = create_metrics()
    limits = config.limits
    app[LIMITER] = Limiter(
        limits.rate_per_client_per_minute,
        limits.rate_per_source_per_second,
        limits.max_concurrent_requests,
        auth_failures_per_minute=limits.auth_failures_per_client_per_minute,
        max_concurrent_per_client=limits.max_concurrent_per_client,
    )
    app[REFUSAL_LOG] = RepeatLimiter(REFUSAL_LINES_PER_SECOND)
    app.on_response_prepare.append(_response_headers(config))  # one hook: it runs on every answer
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(maintenance)
    app.cleanup_ctx.append(mailing)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_post("/v1/{kind:forms|chats}/{source}", intake.receive)
    form_page.add_routes(app)  # the example form and its fill-time stamp
    app.router.add_route("OPTIONS", "/v1/{kind:forms|chats}/{source}", intake.preflight)
    admin.add_routes(app)
    link_pages.add_routes(app)  # the pages behind the unsubscribe and confirm links
    access_pages.add_routes(app)  # self-service access by a mailed link
    document = build_spec(config)  # built once; the config does not change while serving

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", openapi)
    return app


_PageHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def _origin(url: str | None) -> str | None:
    # A URL's scheme://host[:port], if it is one a CSP source expression can hold as-is.
    parts = urlsplit(url or "")
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if _HOST_PORT.match(host) else None


def _csp(form_targets: Iterable[str]) -> str:
    # Nothing loads but the pages' one inline style (by its hash); forms post to this
    # service and, for an html source, follow its redirect to the site's success or
    # error page (Chromium applies form-action to redirects too). No page may be framed:
    # the form carries consent checkboxes, and a framed, overlaid form could collect a
    # click that was never a consent (site owners copy the form's HTML instead).
    return "; ".join(
        (
            "default-src 'none'",
            f"style-src '{pages.STYLE_HASH}'",
            "form-action " + " ".join(("'self'", *sorted(set(form_targets)))),
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


def _response_headers(config: Config) -> _PageHook:
    """A response hook: our own Server name and nosniff everywhere; CSP, frame and referrer policy on HTML."""
    default = _csp(())
    per_source = {
        name: _csp(o for o in map(_origin, (source.success_url, source.error_url)) if o)
        for name, source in config.sources.items()
        if source.format == "html"
    }

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        # Do not advertise the framework and Python versions to scanners.
        response.headers["Server"] = "qualitydesk-ingest"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.content_type != "text/html":
            return
        source = request.match_info.get("source") if request.match_info.get("kind") == "forms" else None
        response.headers.setdefault("Content-Security-Policy", per_source.get(source or "", default))
        response.headers.setdefault("X-Frame-Options", "DENY")
        # Link pages carry their token in the URL: never send it on. The example form
        # is the exception: under no-referrer a browser posts it with `Origin: null`,
        # which the origin check must refuse; same-origin sends nothing to other sites.
        form = request.method == "GET" and source is not None
        response.headers.setdefault("Referrer-Policy", "same-origin" if form else "no-referrer")

    return hook


async def keep_session(_: asyncpg.Connection) -> None:
    """The serving pool's reset on release: nothing beyond what asyncpg always does.

    asyncpg always rolls back a transaction left open and drops listeners; its default
    reset then also runs `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`,
    one more round trip and four commands for PostgreSQL on every release (every
    group-commit batch). The serving code leaves none of that behind: its statements
    run in transactions or alone, with transaction-local settings only
    (set_config(..., true)), no LISTEN, no session-level advisory lock, no cursor
    outside a transaction, no temporary table (tests/test_pool_reset.py checks).
    Migrations and `ingest crm-tail`, which take an advisory lock or LISTEN, use
    connections of their own.
    """


async def database(app: web.Application) -> AsyncIterator[None]:
    """Open the pool, check consent texts against the database, close on shutdown."""
    config = app[CONFIG]
    pool = await asyncpg.create_pool(
        app[DSN],
        min_size=0,
        max_size=10,
        command_timeout=10,
        timeout=5,
        max_inactive_connection_lifetime=60,
        reset=keep_session,
    )
    writer = None
    try:
        await sync_consent_texts(pool, config, app[PEPPER])
        app[POOL] = pool
        if config.limits.batch_max_rows > 1:
            writer = GroupCommitWriter(
                pool,
                app[PEPPER],
                config.limits.batch_max_rows,
                config.limits.batch_max_wait_ms,
                on_batch=app[METRICS].batch_size.observe,
                deadline_seconds=config.limits.request_deadline_seconds,
            )
            writer.start()
        app[SERVICE] = IngestService(config, pool, app[PEPPER], writer)
        yield
    finally:
        # Bounded, so that a stop completes with the database frozen: the queue is
        # committed or answered 503 by its deadlines, then the pool closes or is cut.
        if writer is not None:
            await writer.stop()
        try:
            await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
        except TimeoutError:
            log.warning("pool_close_timed_out")  # asyncpg terminated every connection
