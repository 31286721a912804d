"""Schemathesis hooks for tests/test_fuzz.py: every generated delivery is signed as its source expects.

Loaded by the schemathesis CLI (SCHEMATHESIS_HOOKS); FUZZ_SOURCES maps each source's
path to its format, secret and options. Signing happens in a `requests` auth hook,
on the body bytes exactly as sent, so fuzzing reaches validation and storage instead
of stopping at 401.
"""

from __future__ import annotations

import json
import os
from typing import Any

import requests
import schemathesis

from tests.support import sign_delivery

SOURCES: dict[str, dict[str, Any]] = json.loads(os.environ.get("FUZZ_SOURCES", "{}"))


class Sign(requests.auth.AuthBase):
    """Add the signature headers (or URL key) of one source to a prepared request."""

    def __init__(self, source: dict[str, Any]) -> None:
        self.source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Sign the body as sent (LiveChat: put the key into it first)."""
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        if self.source["format"] == "livechat":
            body = _with_secret_key(body, self.source["secret"])
            request.body = body
            request.headers["Content-Length"] = str(len(body))
        headers, query = sign_delivery(
            self.source["format"], body, self.source["secret"], self.source["options"]
        )
        request.headers.update(headers)
        if query:
            request.prepare_url(request.url, query)
        return request


def _with_secret_key(body: bytes, secret: str) -> bytes:
    # Only a body the schema allows (an object with a string secret_key) gets the real
    # key: a generated body that breaks the schema must stay refused.
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict) or not isinstance(payload.get("secret_key"), str):
        return body
    return json.dumps(payload | {"secret_key": secret}).encode()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Sign a POST to a source's path."""
    source = SOURCES.get(case.operation.path)
    if source is not None and case.method.upper() == "POST":
        kwargs["auth"] = Sign(source)
