"""A legitimate sender at a steady rate (open loop), from its own address; prints one JSON line.

Each request is a distinct submission signed at the moment it is sent, from
127.0.0.2 (another client address than wrk's 127.0.0.1), started on schedule
whatever the answers before it took, so a slow server shows in the latency rather
than in a lower rate (no coordinated omission). Used by bench/run.py:

    .venv/bin/python bench/paced.py PORT SECONDS RATE
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import aiohttp
from standardwebhooks import Webhook

PATH = "/v1/forms/bench"
SOURCE_ADDRESS = "127.0.0.2"


async def send(session: aiohttp.ClientSession, url: str, webhook: Webhook, i: int) -> tuple[int, float]:
    run = uuid.uuid4().hex[:12]
    body = json.dumps(
        {"name": f"Paced Person {i}", "email": f"paced-{run}@example.fi", "message": "Please call me."},
        separators=(",", ":"),
    )
    msg_id = f"msg_paced_{run}"
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": webhook.sign(msg_id, datetime.now(UTC), body),
    }
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    return status, time.perf_counter() - started


async def run(port: int, seconds: float, rate: float) -> dict[str, float]:
    webhook = Webhook(os.environ["BENCH_SECRET"])
    url = f"http://127.0.0.1:{port}{PATH}"
    connector = aiohttp.TCPConnector(local_addr=(SOURCE_ADDRESS, 0), limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            tasks.append(asyncio.create_task(send(session, url, webhook, i)))
        results = await asyncio.gather(*tasks)
    latencies = sorted(latency for _, latency in results)
    ok = sum(1 for status, _ in results if 200 <= status < 300)  # noqa: PLR2004
    return {
        "sent": len(results),
        "ok": ok,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))))
