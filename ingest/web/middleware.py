"""One JSON error middleware and one log line per request."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from ingest import errors
from ingest.logs import where
from ingest.web.keys import LOG_INFO, METRICS, REFUSAL_LOG

log = structlog.get_logger("ingest.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_HTTP_CODES = {
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def error_response(error: errors.IngestError) -> web.Response:
    """Render an IngestError as its JSON body, status and headers."""
    return web.json_response(error.body(), status=error.status, headers=dict(error.headers))


# Headers of aiohttp's own errors that are part of their meaning: a 405 must name the
# methods the resource has (RFC 9110 15.5.6), as aiohttp's HTTPMethodNotAllowed does.
_KEPT_HEADERS = ("Allow",)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    kind = _HTTP_CODES.get(exc.status)
    if kind is not None:
        response = error_response(kind())
    else:
        code = re.sub(r"[^a-z]+", "_", exc.reason.lower()).strip("_") or "error"
        response = web.json_response({"error": code}, status=exc.status)
    for name in _KEPT_HEADERS:
        if name in exc.headers:
            response.headers[name] = exc.headers[name]
    return response


async def _dispatch(request: web.Request, handler: Handler, info: dict[str, Any]) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.IngestError as exc:
        info.setdefault("error", exc.code)
        return error_response(exc)
    except web.HTTPException as exc:
        response = _from_http_exception(exc)
        info.setdefault("error", f"http_{exc.status}")
        return response
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into 500
        # Type and location only: exception messages can quote personal data.
        log.error("unhandled_error", exc_type=type(exc).__name__, where=where(exc))  # noqa: TRY400
        info["error"] = "internal"
        return web.json_response({"error": "internal"}, status=500)


def _log_request(request: web.Request, route: str, status: int, elapsed: float, info: dict[str, Any]) -> None:
    log.info(
        "request",
        method=request.method,
        route=route,
        status=status,
        latency_ms=round(elapsed * 1000, 2),
        **info,
    )


def _log_left_out(kind: Any, count: int) -> None:
    route, status, error, reason, source = kind
    log.warning(
        "requests_not_logged",
        route=route,
        status=status,
        error=error,
        reason=reason,
        source=source,
        count=count,
    )


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, render errors as JSON, count and log the request once."""
    given = request.headers.get("X-Request-Id", "")
    # Ours: 32 random hex digits, as uuid4().hex but without building a UUID.
    request_id = given if _REQUEST_ID_RE.match(given) else os.urandom(16).hex()
    info: dict[str, Any] = {}
    request[LOG_INFO] = info
    started = time.perf_counter()
    status = 500
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await _dispatch(request, handler, info)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - started
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[METRICS]
        metrics.child(metrics.requests, route, str(status)).inc()
        metrics.child(metrics.latency, route).observe(elapsed)
        refusals = request.app[REFUSAL_LOG]
        if status >= 400 or info.get("outcome") == "decoy":  # noqa: PLR2004 - a flood of them is logged in part
            kind = (route, status, info.get("error"), info.get("reason"), info.get("source"))
            if refusals.allow(kind):
                _log_request(request, route, status, elapsed, info)
        elif route not in QUIET_ROUTES:
            _log_request(request, route, status, elapsed, info)
        for left_out, count in refusals.ended().items():
            _log_left_out(left_out, count)
        structlog.contextvars.unbind_contextvars("request_id")
