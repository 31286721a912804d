"""Benchmark: the bare handler, the pipeline's ceiling, the service, floods and pgbench, in one run.

Starts PostgreSQL (DATABASE_URL, else the embedded one) and each server in turn,
drives it with wrk (64 connections) using validly signed, distinct submissions,
and prints every row side by side with the ratios the targets are stated in:

  a  bare aiohttp JSON handler (bench/bare.py): the upper bound (a2: measured again
     just before the refusals, which are compared with it)
  e  the service with the commit replaced by a no-op (bench/nocommit.py), 1 worker
  c  the service, 1 worker
  d  the service, the default workers (one per CPU)
  f  floods: a legitimate client at 50 req/s from its own address while wrk floods
     wrongly signed submissions, then 60 KiB junk bodies, under the default limits
  r  each rejection path flooded alone against a fresh (c): CPU per request against (a2)
  p  pgbench, the same two-insert transaction with 64 clients (the moonshot's yardstick)

Usage: .venv/bin/python bench/run.py [--duration 15] [--warmup 20] [--soak-rows 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import (
    ROOT,
    count_rows,
    cpu_seconds,
    database,
    execute,
    free_port,
    fresh_database,
    rss_mb,
    server,
    workers,
)
import asyncpg
from standardwebhooks import Webhook

SECRET = "whsec_" + "YmVuY2htYXJrLXNlY3JldC1ub3QtZm9yLXByb2R1Y3Rpb24="
CONNECTIONS = 64
THREADS = 1  # wrk, the server and PostgreSQL share this machine's cores
PACED_RATE = 50  # the legitimate client's req/s during a flood
WARM_FLOOD_SECONDS = 3  # each flood (and the paced client) runs this long unmeasured first
REJECTIONS = ("badsig", "junk", "unknown_source", "wrong_type", "too_large", "honeypot")
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
[sources.web]
channel = "form"
format = "html"
allowed_origins = ["https://www.example.fi"]
honeypot_field = "website"
purposes = ["contact"]
"""
# The rows without mail: half the submissions grant marketing (recorded and chained in
# the consent ledger), but no receipt is mailed; row m keeps the default (receipts on).
NO_RECEIPTS = """
[mail]
receipts = false
"""
# Throughput rows: limits out of the way (the default 500 req/s per source would cap them).
OPEN_LIMITS = """
[limits]
rate_per_client_per_minute = 100000000
rate_per_source_per_second = 100000000
max_concurrent_requests = 100000
auth_failures_per_client_per_minute = 100000000
max_concurrent_per_client = 100000
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


@dataclass
class Flood:
    name: str
    rps: float
    statuses: str
    cpu_us: float
    paced: dict[str, float] | None  # the legitimate client's figures during the flood


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
            out.write(f"{msg_id}\t{int(now.timestamp())}\t{webhook.sign(msg_id, now, body)}\t{body}\n")


def wrk(port: int, seconds: float, script: str, env: dict[str, str], marker: str) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--timeout", "10s"]
        + ["-s", str(ROOT / "bench" / script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env=os.environ | env,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith(marker + " "))
    return dict(item.split("=", 1) for item in line.split()[1:])


def submit(port: int, seconds: float, requests: Path) -> dict[str, int]:
    env = {"BENCH_REQUESTS": str(requests), "BENCH_THREADS": str(THREADS), "BENCH_PATH": "/v1/forms/bench"}
    return {k: int(v) for k, v in wrk(port, seconds, "submit.lua", env, "BENCH").items()}


def paced_client(port: int, seconds: float) -> subprocess.Popen[str]:
    """The legitimate client (bench/paced.py) at PACED_RATE for `seconds`; its figures on stdout."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "paced.py"), str(port), str(seconds), str(PACED_RATE)],
        env=os.environ | {"BENCH_SECRET": SECRET},
        stdout=subprocess.PIPE,
        text=True,
    )


class Bench:
    def __init__(self, args: argparse.Namespace, server_dsn: str, tmp: Path) -> None:
        self.args = args
        self.server_dsn = server_dsn
        self.tmp = tmp
        self.port = free_port()

    def requests(self, name: str, count: int) -> Path:
        path = self.tmp / f"{name}.tsv"
        write_requests(path, count)
        return path

    def service(
        self,
        name: str,
        limits: str,
        worker_count: int | None,
        launcher: str | None = None,
        mail: str = NO_RECEIPTS,
    ):
        dsn = asyncio.run(fresh_database(self.server_dsn, f"ingest_bench_{name}"))
        config = self.tmp / f"{name}.toml"
        config.write_text(CONFIG + mail + limits)
        env = dict(os.environ) | {
            "DATABASE_URL": dsn,
            "BENCH_SECRET": SECRET,
            "INGEST_PEPPER": secrets.token_hex(32),  # a fresh database per run: any strong pepper
            "INGEST_MAIL_DIR": str(self.tmp / f"mail-{name}"),  # receipts as .eml files (no SMTP)
        }
        subprocess.run(
            [sys.executable, "-m", "ingest", "migrate"], env=env, cwd=ROOT, check=True, capture_output=True
        )
        program = [str(ROOT / "bench" / launcher)] if launcher else ["-m", "ingest"]
        cmd = [
            sys.executable,
            *program,
            "--config",
            str(config),
            "serve",
            "--port",
            str(self.port),
            "--no-migrate",
        ]
        if worker_count is not None:
            cmd += ["--workers", str(worker_count)]
        return server(cmd, env, self.port), dsn, env

    def measure(self, name: str, process: subprocess.Popen[bytes], dsn: str | None) -> Result:
        count = max(100_000, int(8_000 * self.args.duration))
        warmup, requests = self.requests(f"{name}-warmup", 60_000), self.requests(name, count)
        submit(self.port, self.args.warmup, warmup)
        time.sleep(0.5)  # warm-up requests still in flight commit before the count
        before = asyncio.run(count_rows(dsn)) if dsn else 0
        cpu_before = cpu_seconds(process.pid)
        stats = submit(self.port, self.args.duration, requests)
        cpu = cpu_seconds(process.pid) - cpu_before
        time.sleep(0.5)  # let answers to dropped in-flight requests commit
        rows = asyncio.run(count_rows(dsn)) - before if dsn else None
        while self.args.soak_rows and dsn and asyncio.run(count_rows(dsn)) < self.args.soak_rows:
            submit(self.port, 20, self.requests(f"{name}-soak", 200_000))
        result = Result(
            name,
            stats["requests"] / (stats["duration_us"] / 1e6),
            stats["p50_us"] / 1000,
            stats["p99_us"] / 1000,
            stats["ok"],
            stats["bad"],
            stats["socket_errors"],
            rows,
            max(rss_mb(worker) for worker in workers(process.pid)),
            cpu / max(stats["requests"], 1) * 1e6,
        )
        print(result, file=sys.stderr, flush=True)
        return result

    def flood(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        kind: str | None,
        paced: bool,
        dsn: str | None = None,
    ) -> Flood:
        seconds = self.args.duration
        legit = None
        # Unmeasured first: the server's first requests of a kind (cold code paths, new
        # pool connections) are not what a flood costs it.
        if kind is not None:
            wrk(self.port, WARM_FLOOD_SECONDS, "flood.lua", {"BENCH_FLOOD": kind}, "FLOOD")
        elif paced:
            paced_client(self.port, WARM_FLOOD_SECONDS).communicate(timeout=60)
        before = asyncio.run(count_rows(dsn)) if dsn else 0
        if paced:
            legit = paced_client(self.port, seconds)
        cpu_before = cpu_seconds(process.pid)
        if kind is None:
            time.sleep(seconds)
            stats = {"requests": "0", "duration_us": str(int(seconds * 1e6)), "statuses": "-"}
        else:
            stats = wrk(self.port, seconds, "flood.lua", {"BENCH_FLOOD": kind}, "FLOOD")
        cpu = cpu_seconds(process.pid) - cpu_before
        figures = json.loads(legit.communicate(timeout=60)[0]) if legit else None
        if figures is not None and dsn:
            # The paced client waits for every answer: its 2xx and the rows committed must be equal.
            figures["rows"] = asyncio.run(count_rows(dsn)) - before
        flooded = int(stats["requests"])
        served = flooded + (int(figures["sent"]) if figures else 0)
        result = Flood(
            name,
            flooded / (int(stats["duration_us"]) / 1e6),
            stats["statuses"],
            cpu / max(served, 1) * 1e6,
            figures,
        )
        print(result, file=sys.stderr, flush=True)
        return result

    def pgbench(self) -> float:
        binary = shutil.which("pgbench") or next(
            iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None
        )
        if binary is None:
            return float("nan")
        dsn = asyncio.run(fresh_database(self.server_dsn, "ingest_bench_pgbench"))
        asyncio.run(
            execute(
                dsn,
                "CREATE TABLE contacts (id bigserial PRIMARY KEY, email_hash text NOT NULL, name text, "
                "email text, phone text, created_at timestamptz NOT NULL DEFAULT now());"
                "CREATE TABLE submissions (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                "contact_email_hash text NOT NULL, message text, received_at timestamptz NOT NULL DEFAULT now());",
            )
        )
        out = subprocess.run(
            [
                str(binary),
                "-n",
                "-M",
                "prepared",
                "-c",
                str(CONNECTIONS),
                "-j",
                "2",
                "-T",
                str(int(self.args.duration)),
            ]
            + ["-f", str(ROOT / "bench" / "pgbench.sql"), dsn],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = re.search(r"tps = ([\d.]+)", out)
        return float(match[1]) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=20, help="seconds of load before each measured row")
    parser.add_argument(
        "--soak-rows", type=int, default=0, help="keep each service row running until this many rows"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    results: dict[str, Result] = {}
    floods: list[Flood] = []
    with database() as server_dsn, tempfile.TemporaryDirectory() as tmp_name:
        bench = Bench(args, server_dsn, Path(tmp_name))
        bare_cmd = [sys.executable, str(ROOT / "bench" / "bare.py"), str(bench.port)]
        with server(bare_cmd, dict(os.environ), bench.port) as process:
            results["a"] = bench.measure("a_bare_aiohttp", process, None)
        context, _, _ = bench.service("e", OPEN_LIMITS, 1, launcher="nocommit.py")
        with context as process:
            results["e"] = bench.measure("e_no_commit_1w", process, None)
        context, dsn, _ = bench.service("c", OPEN_LIMITS, 1)
        with context as process:
            results["c"] = bench.measure("c_service_1w", process, dsn)
        # The refusals' CPU is compared with the bare handler's measured again just before
        # them: on a shared machine the CPU a request costs drifts over minutes.
        with server(bare_cmd, dict(os.environ), bench.port) as process:
            results["a2"] = bench.measure("a2_bare_again", process, None)
        context, _, _ = bench.service("r", OPEN_LIMITS, 1)  # as (c), fresh
        with context as process:
            for kind in REJECTIONS:
                floods.append(bench.flood(f"r_{kind}", process, kind, paced=False))
        context, dsn, _ = bench.service("m", OPEN_LIMITS, 1, mail="")  # the default: receipts on
        with context as process:
            results["m"] = bench.measure("m_receipts_1w", process, dsn)
            mail_states = asyncio.run(outbox_states(dsn))
        context, dsn, _ = bench.service("d", OPEN_LIMITS, None)
        with context as process:
            results["d"] = bench.measure(f"d_service_{os.cpu_count()}w", process, dsn)
        context, dsn, _ = bench.service("f", "", None)  # the default limits
        with context as process:
            for kind in (None, "badsig", "junk"):
                floods.append(bench.flood(f"f_{kind or 'quiet'}", process, kind, paced=True, dsn=dsn))
        tps = bench.pgbench()
    report(results, floods, tps, mail_states)


async def outbox_states(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM ingest.outbox GROUP BY state")
    finally:
        await conn.close()
    return {row["state"]: row["n"] for row in rows}


def report(results: dict[str, Result], floods: list[Flood], tps: float, mail_states: dict[str, int]) -> None:
    print(f"\nwrk: {THREADS} thread, {CONNECTIONS} connections; {os.cpu_count()} CPUs on this machine\n")
    header = (
        f"{'scenario':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'2xx':>9}{'non-2xx':>9}"
        f"{'sock err':>9}{'rows':>9}{'RSS MB':>9}{'CPU us/req':>11}"
    )
    print(header + "\n" + "-" * len(header))
    for r in results.values():
        rows = "-" if r.rows is None else str(r.rows)
        print(
            f"{r.name:<18}{r.rps:>9.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.ok:>9}{r.non_2xx:>9}"
            f"{r.socket_errors:>9}{rows:>9}{r.rss_mb or 0:>9.0f}{r.cpu_us:>11.0f}"
        )
    print(f"p_pgbench_2_inserts{tps:>8.0f}   (tps, 64 clients)\n")
    print(
        f"{'flood':<18}{'req/s':>9}{'CPU us/req':>11}  {'of (a2)':>7}  legit ok/sent  p50 ms  p99 ms  statuses"
    )
    a, e, c, d, m = results["a"], results["e"], results["c"], results["d"], results["m"]
    a2 = results["a2"]  # the bare handler again, measured just before the refusals
    for f in floods:
        legit = (
            f"{f.paced['ok']:>6.0f}/{f.paced['sent']:<6.0f}{f.paced['p50_ms']:>8.1f}{f.paced['p99_ms']:>8.1f}"
            if f.paced
            else " " * 29
        )
        print(
            f"{f.name:<18}{f.rps:>9.0f}{f.cpu_us:>11.0f}  {f.cpu_us / a2.cpu_us:>7.2f}  {legit}  {f.statuses}"
        )
    print()
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print(f"1. (e)/(a) = {e.rps / a.rps:.2f}   target >= 0.40   {verdict(e.rps / a.rps >= 0.40)}")
    print(f"2. (c)/(e) = {c.rps / e.rps:.2f}   target >= 0.85   {verdict(c.rps / e.rps >= 0.85)}")
    in_flight = (d.rows or 0) - d.ok
    print(
        f"3. (d) p99 = {d.p99_ms:.1f} ms (target <= 50) {verdict(d.p99_ms <= 50)}; non-2xx {d.non_2xx} "
        f"{verdict(d.non_2xx == 0)}; rows - 2xx = {in_flight} (answers wrk cut off, <= {CONNECTIONS}) "
        f"{verdict(0 <= in_flight <= CONNECTIONS)}"
    )
    for f in floods:
        if f.name.startswith("f_") and f.paced:
            fine = f.paced["ok"] == f.paced["sent"] == f.paced.get("rows") and f.paced["p99_ms"] <= 50
            print(
                f"4. {f.name}: legit {f.paced['ok']:.0f}/{f.paced['sent']:.0f} ok, rows committed "
                f"{f.paced.get('rows', '-')} (= 2xx), p99 {f.paced['p99_ms']:.1f} ms   {verdict(fine)}"
            )
    # The rejection paths the target names; junk (a 60 KiB body, HMAC over all of it) is shown beside them.
    worst = max((f for f in floods if f.name.startswith("r_") and f.name != "r_junk"), key=lambda f: f.cpu_us)
    print(
        f"4. worst rejection path {worst.name}: {worst.cpu_us / a2.cpu_us:.2f}x (a2)'s CPU   target <= 2   {verdict(worst.cpu_us <= 2 * a2.cpu_us)}"
    )
    print(
        f"(m) with receipts mailed (half the submissions grant marketing): {m.rps / c.rps:.2f}x (c), "
        f"{m.rps / e.rps:.2f}x (e); outbox after the run: {mail_states} (mail yields to requests under load)"
    )
    print(
        f"5. (d) {d.rps:.0f} req/s vs pgbench {tps:.0f} tps = {d.rps / tps:.2f}   moonshot > 1   {verdict(d.rps > tps)}"
    )


if __name__ == "__main__":
    main()
