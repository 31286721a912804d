"""What the routes read from a request, each within a bound.

The source named in the URL, the client's address, the body (size and time limited),
and database work (the request's deadline).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ingest import errors
from ingest.config import Source
from ingest.deadlines import within
from ingest.domain import Channel
from ingest.web.keys import CONFIG, LOG_INFO, SERVICE

T = TypeVar("T")

_CHANNELS: dict[str, Channel] = {"forms": "form", "chats": "chat"}


def resolve_source(request: web.Request) -> Source:
    """The configured source named in the URL, on the channel of the URL."""
    channel = _CHANNELS[request.match_info["kind"]]
    source = request.app[CONFIG].sources.get(request.match_info["source"])
    if source is None or source.channel != channel:
        raise errors.UnknownSource
    request[LOG_INFO].update(source=source.name, channel=source.channel, format=source.format)
    return source


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """Read at most `limit` bytes within `seconds` (slow bodies are cut off)."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge
    if request.content.is_eof():
        # The whole body came in with the headers (the usual small webhook): no wait, no timer.
        body = request.content.read_nowait()
        if len(body) > limit:  # a chunked body carries no Content-Length to check first
            raise errors.PayloadTooLarge
        return body
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise errors.PayloadTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise errors.RequestTimeout from None
    except (ConnectionResetError, ClientPayloadError, HttpProcessingError, RequestPayloadError):
        # The client went away mid-body, or sent a broken chunked/length framing.
        raise errors.MalformedBody from None
    return b"".join(chunks)


def client_address(request: web.Request, trusted_hops: int) -> str:
    """The client's address: the peer, or the entry `trusted_hops` from the right of X-Forwarded-For."""
    if trusted_hops > 0:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops]
    return request.remote or "unknown"


async def bounded(request: web.Request, work: Awaitable[T]) -> T:
    """The database work of an admin or link request: done within the request deadline, else 503.

    These routes share the pool with intake: a held lock or a frozen server must not
    hold them (nor their callers) longer than a submission would be held.
    """
    return await within(request.app[SERVICE].deadline(), work)
