"""Benchmark: bare aiohttp (a) vs the service per request (b) vs with group commit (c).

Starts PostgreSQL (DATABASE_URL, else the embedded one) and each server in turn,
drives it with wrk (64 connections) using validly signed, distinct submissions,
and prints req/s, p50/p99 latency, errors, rows committed vs 2xx answered and RSS
side by side, with the ratios the targets are stated in. Usage:

    .venv/bin/python bench/run.py [--duration 15] [--soak-rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1ub3QtZm9yLXByb2R1Y3Rpb24="
CONNECTIONS = 64
THREADS = 2
# Long enough for the new database to settle (first autovacuum/analyze of the grown tables).
WARMUP_SECONDS = 45
CONFIG = """
notice_version = "bench"
default_region = "FI"
[purposes.contact]
lawful_basis = "legitimate_interest"
retention_days = 730
[purposes.direct_marketing]
lawful_basis = "consent"
retention_days = 730
[consents.marketing-email-v1]
purpose = "direct_marketing"
text = "Yes, send me QualityDesk news by e-mail."
[sources.bench]
channel = "form"
format = "json"
secret_env = "BENCH_SECRET"
purposes = ["contact"]
[limits]
batch_max_rows = {batch}
rate_per_client_per_minute = 100000000
rate_per_source_per_second = 100000000
max_concurrent_requests = 100000
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    non_2xx: int
    socket_errors: int
    rows: int | None
    rss_mb: float | None
    cpu_us: float  # server CPU time per request (user + system), microseconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_requests(path: Path, count: int) -> None:
    """Distinct, validly signed canonical JSON submissions, timestamped now."""
    webhook = Webhook(SECRET)
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    with path.open("w") as out:
        for i in range(count):
            body = json.dumps(
                {
                    "name": f"Bench Person {i}",
                    "email": f"bench-{run}-{i}@example.fi",
                    "phone": f"+358 40 {i % 10_000_000:07d}",  # distinct, like real traffic
                    "message": f"Benchmark message {i}, please call me.",
                    "consents": {"marketing-email-v1": i % 2 == 0},
                },
                separators=(",", ":"),
            )
            msg_id = f"msg_{run}_{i}"
            signature = webhook.sign(msg_id, now, body)
            out.write(f"{msg_id}\t{int(now.timestamp())}\t{signature}\t{body}\n")


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not ready")


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match[1]) / 1024 if match else float("nan")


def workers(pid: int) -> list[int]:
    """The serving processes: the server itself, or its worker children with --workers N."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] or [pid]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the serving processes."""
    total = 0
    for worker in workers(pid):
        fields = Path(f"/proc/{worker}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port: int, seconds: float, requests: Path) -> dict[str, int]:
    env = os.environ | {
        "BENCH_REQUESTS": str(requests),
        "BENCH_THREADS": str(THREADS),
        "BENCH_PATH": "/v1/forms/bench",
    }
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{int(seconds)}s",
            "--timeout",
            "10s",
            "-s",
            str(ROOT / "bench" / "submit.lua"),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("BENCH "))
    return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ingest.submissions"))
    finally:
        await conn.close()


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def measure(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    seconds: float,
    tmp: Path,
    dsn: str | None,
    soak_rows: int = 0,
) -> Result:
    requests = tmp / f"{name}.tsv"
    warmup = tmp / f"{name}-warmup.tsv"
    write_requests(warmup, 60_000)
    write_requests(requests, 100_000)  # distinct from the warm-up: no duplicates in the run
    with server(cmd, env, port) as process:
        wrk(port, WARMUP_SECONDS, warmup)
        time.sleep(0.5)  # warm-up requests still in flight commit before the count
        before = asyncio.run(count_rows(dsn)) if dsn else 0
        cpu_before = cpu_seconds(process.pid)
        stats = wrk(port, seconds, requests)
        cpu = cpu_seconds(process.pid) - cpu_before
        time.sleep(0.5)  # let answers to dropped in-flight requests commit
        rows = asyncio.run(count_rows(dsn)) - before if dsn else None
        if soak_rows and dsn:
            while asyncio.run(count_rows(dsn)) < soak_rows:
                write_requests(requests, 200_000)
                wrk(port, 20, requests)
        rss = max(rss_mb(worker) for worker in workers(process.pid))
    return Result(
        name,
        stats["requests"] / (stats["duration_us"] / 1e6),
        stats["p50_us"] / 1000,
        stats["p99_us"] / 1000,
        stats["ok"],
        stats["bad"],
        stats["socket_errors"],
        rows,
        rss,
        cpu / max(stats["requests"], 1) * 1e6,
    )


@contextlib.contextmanager
def database() -> Iterator[str]:
    base = os.environ.get("DATABASE_URL")
    if base:
        yield base
        return
    sys.path.insert(0, str(ROOT))
    from ingest.embedded import embedded_postgres

    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp)) as dsn:
        yield dsn


async def fresh_database(server_dsn: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # noqa: S608 - our own name
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(server_dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument(
        "--soak-rows",
        type=int,
        default=100_000,
        help="keep (c) running until this many rows, then read its RSS",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    results = []
    with database() as server_dsn, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        results.append(
            measure(
                "a_bare_aiohttp",
                [sys.executable, str(ROOT / "bench" / "bare.py"), str(port)],
                dict(os.environ),
                port,
                args.duration,
                tmp,
                None,
            )
        )
        scenarios = (
            ("b_per_request", 1, 1, 0),
            ("c_group_commit", 200, 1, args.soak_rows),
            # Not a target row: the default deployment here (one worker per CPU), for operators.
            ("d_2_workers", 200, 2, 0),
        )
        for name, batch, worker_count, soak in scenarios:
            dsn = asyncio.run(fresh_database(server_dsn, f"ingest_bench_{name}"))
            config = tmp / f"{name}.toml"
            config.write_text(CONFIG.format(batch=batch))
            env = dict(os.environ) | {
                "DATABASE_URL": dsn,
                "BENCH_SECRET": SECRET,
                "INGEST_PEPPER": secrets.token_hex(32),  # a fresh database per run: any strong pepper
            }
            subprocess.run(
                [sys.executable, "-m", "ingest", "migrate"],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            cmd = [
                sys.executable,
                "-m",
                "ingest",
                "--config",
                str(config),
                "serve",
                "--workers",
                str(worker_count),
                "--port",
                str(port),
                "--no-migrate",
            ]
            results.append(measure(name, cmd, env, port, args.duration, tmp, dsn, soak))
    report(results)


def report(results: list[Result]) -> None:
    print(
        f"\nwrk: {THREADS} threads, {CONNECTIONS} connections; (a)-(c) one server process; "
        f"{os.cpu_count()} CPUs on this machine\n"
    )
    header = (
        f"{'scenario':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'2xx':>9}{'non-2xx':>9}"
        f"{'sock err':>9}{'rows':>9}{'RSS MB':>9}{'CPU us/req':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        rows = "-" if r.rows is None else str(r.rows)
        rss = "-" if r.rss_mb is None else f"{r.rss_mb:.0f}"
        print(
            f"{r.name:<16}{r.rps:>9.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.ok:>9}{r.non_2xx:>9}"
            f"{r.socket_errors:>9}{rows:>9}{rss:>9}{r.cpu_us:>11.0f}"
        )
    a, b, c, d = results
    print()
    print(f"(c)/(a) = {c.rps / a.rps:.2f}   target >= 0.50")
    print(f"(c)/(b) = {c.rps / b.rps:.2f}   target >= 3.00")
    print(f"(c) p99 = {c.p99_ms:.1f} ms   target <= 50")
    print(f"(c) non-2xx = {c.non_2xx}   target 0")
    for r in (b, c):
        extra = (r.rows or 0) - r.ok
        print(
            f"{r.name}: rows committed {r.rows} vs 2xx answered {r.ok} "
            f"({extra} committed while wrk stopped reading: in flight at the cut-off, <= {CONNECTIONS})"
        )
    print(f"(c) RSS after the soak = {c.rss_mb:.0f} MB   target <= 200")
    print(
        f"(d) {os.cpu_count()} CPUs, 2 workers: {d.rps:.0f} req/s = {d.rps / c.rps:.2f}x (c), "
        f"{d.rps / a.rps:.2f}x (a); RSS per worker {d.rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
