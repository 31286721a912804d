"""Baseline (a): a bare aiohttp handler that parses JSON and answers 201: the upper bound."""

from __future__ import annotations

import json
import sys
import uuid

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    payload = json.loads(await request.read())
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest
    return web.json_response({"status": "created", "submission_id": str(uuid.uuid4())}, status=201)


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/forms/{source}", handle)
    app.router.add_get("/readyz", lambda _: web.json_response({"status": "ready"}))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
