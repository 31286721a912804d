"""Typed application keys."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ingest.config import Config
from ingest.domain import InboundRequest
from ingest.logs import RepeatLimiter
from ingest.metrics import Metrics
from ingest.service import IngestService
from ingest.web.limits import Limiter

CONFIG = web.AppKey("config", Config)
DSN = web.AppKey("dsn", str)
PEPPER = web.AppKey("pepper", str)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", asyncpg.Pool)
SERVICE = web.AppKey("service", IngestService)
LIMITER = web.AppKey("limiter", Limiter)
REFUSAL_LOG = web.AppKey("refusal_log", RepeatLimiter)  # how many refusal lines a second are written

# Per-request facts for the request log line (ids, codes, names; never values).
LOG_INFO = web.RequestKey("log", dict)

# The request's headers by lower-case name, made once for the adapters (intake._lowered_headers).
LOWERED_HEADERS = web.RequestKey("lowered_headers", dict)

# An html source's posted form, kept for the request: its 422 page re-renders it filled in.
SUBMITTED_FORM = web.RequestKey("submitted_form", InboundRequest)
