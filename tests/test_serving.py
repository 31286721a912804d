"""`ingest serve` as processes: one socket, supervised workers, one set of metrics, whole log lines.

Each test starts the real command (gunicorn's arbiter and aiohttp workers) in a
session of its own, so that a signal to its process group reaches only it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from tests.support import LIVE_CONFIG_TOML, ROOT, free_port, server_env, sign_standard, wait_ready

PEPPER = "serving-pepper-0123456789abcdef-012345"


@dataclass
class Served:
    """A running `ingest serve`."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def base(self) -> str:
        """Its URL."""
        return f"http://127.0.0.1:{self.port}"

    def all_workers(self, count: int, timeout: float = 20) -> set[int]:
        """The pids of its workers once `count` of them run (the first to boot answers first)."""
        deadline = time.monotonic() + timeout
        while len(pids := self.workers()) != count:
            assert time.monotonic() < deadline, f"{len(pids)} of {count} workers after {timeout} s"
            time.sleep(0.1)
        return pids

    def workers(self) -> set[int]:
        """The pids of its live worker processes."""
        children = psutil.Process(self.process.pid).children()
        # (multiprocessing's resource tracker, which the code before gunicorn started, is no worker)
        return {c.pid for c in children if _alive(c) and "resource_tracker" not in " ".join(c.cmdline())}

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Signal the whole process group (as Ctrl-C does) and wait for the exit status."""
        os.killpg(self.process.pid, sig)
        return self.process.wait(timeout=60)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def serve(tmp_path: Path, app_dsn: str) -> Iterator:
    """Start `ingest serve --workers N` on a free port, on this test's database, as the runtime role."""
    started: list[Served] = []
    config = tmp_path / "ingest.toml"
    config.write_text(LIVE_CONFIG_TOML)

    def start(workers: int = 2, port: int | None = None, ready: bool = True, **env: str) -> Served:
        port = port or free_port()
        n = len(started)
        stdout, stderr = tmp_path / f"stdout-{n}.log", tmp_path / f"stderr-{n}.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "ingest", "--config", str(config), "serve", *_args(workers, port)],
                env=server_env(**({"DATABASE_URL": app_dsn, "INGEST_PEPPER": PEPPER} | env)),
                cwd=ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: killpg reaches it alone
            )
        served = Served(process, port, stdout, stderr)
        started.append(served)
        if ready:
            wait_ready(port, process)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            os.killpg(served.process.pid, signal.SIGKILL)
            served.process.wait()


def _args(workers: int, port: int) -> list[str]:
    return ["--workers", str(workers), "--no-migrate", "--port", str(port)]


def _get(url: str) -> tuple[int, str]:
    # A new connection per request: the kernel hands each to whichever worker accepts first.
    request = urllib.request.Request(url, headers={"Connection": "close"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own test server
        return response.status, response.read().decode()


def _post(base: str) -> int:
    body = json.dumps({"email": f"{uuid.uuid4().hex}@example.fi", "message": "hello"}).encode()
    headers = sign_standard(body) | {"Connection": "close"}
    request = urllib.request.Request(f"{base}/v1/forms/partner-forms", data=body, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.status


def _created(exposition: str) -> float:
    return sum(
        float(value)
        for value in re.findall(
            r'^ingest_submissions_total\{[^}]*outcome="created"[^}]*\} (\S+)$', exposition, re.MULTILINE
        )
    )


def _sample(exposition: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", exposition, re.MULTILINE)
    assert match, f"{name} not exposed"
    return float(match.group(1))


def test_any_worker_answers_the_services_totals(serve, tmp_path):
    metrics_dir = tmp_path / "metrics"  # the operator's directory is honoured (and wiped at start)
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")
    served = serve(workers=2, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    workers = served.all_workers(2)
    assert len(workers) == 2
    submissions = 30
    assert {_post(served.base) for _ in range(submissions)} == {201}

    scrapes = [_created(_get(f"{served.base}/metrics")[1]) for _ in range(8)]
    assert scrapes == [submissions] * 8  # before: 7, 7, 13, 13, 7... (each worker its own)

    # Both workers took submissions, so the totals above really are added up across them.
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    per_worker = []
    for pid in workers:
        alone = tmp_path / f"only-{pid}"
        alone.mkdir()
        shutil.copy(metrics_dir / f"counter_{pid}.db", alone)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))
        per_worker.append(_created(generate_latest(registry).decode()))
    assert sum(per_worker) == submissions
    assert min(per_worker) > 0, f"one worker took every submission: {per_worker}"
    assert not (metrics_dir / "counter_1.db").exists()


def test_a_killed_worker_is_replaced_and_counted(serve):
    served = serve(workers=2)
    before = served.all_workers(2)
    assert _sample(_get(f"{served.base}/metrics")[1], "ingest_worker_restarts_total") == 0
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 20
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(_get(f"{served.base}/healthz")[0])  # the other worker answers meanwhile
        now = served.workers()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    after = served.workers()
    assert victim not in after
    assert len(after) == 2, "the dead worker was replaced"  # before: never, half capacity for good
    assert len(after - before) == 1
    wait_ready(served.port, served.process)
    assert set(statuses) == {200}
    restarts = {_sample(_get(f"{served.base}/metrics")[1], "ingest_worker_restarts_total") for _ in range(6)}
    assert restarts == {1}
    assert served.stop() == 0


def test_workers_exit_when_the_parent_is_killed(serve):
    served = serve(workers=2)
    workers = [psutil.Process(pid) for pid in served.all_workers(2)]
    assert len(workers) == 2
    served.process.send_signal(signal.SIGKILL)
    served.process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers kept serving without their parent"
    with socket.socket() as probe:  # and nobody listens on the port any more
        # (SO_REUSEADDR: closed connections of the port in TIME_WAIT are no listener)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", served.port))


def _refused(serve, port: int) -> tuple[int, float, str, str]:
    started = time.monotonic()
    second = serve(workers=2, port=port, ready=False)
    try:
        code = second.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the second instance started serving")  # before: SO_REUSEPORT, both served
    return code, time.monotonic() - started, second.stdout.read_text(), second.stderr.read_text()


def test_a_second_instance_on_a_served_port_fails_at_once_in_one_line(serve):
    first = serve(workers=1)
    code, seconds, stdout, stderr = _refused(serve, first.port)
    assert code != 0
    assert seconds < 5
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert f"127.0.0.1:{first.port}" in lines[0]
    assert "in use" in lines[0]
    assert all(json.loads(line) for line in stdout.splitlines())  # nothing but JSON log lines
    assert _get(f"{first.base}/healthz")[0] == 200  # the first instance is untouched
    assert first.stop() == 0


def test_a_port_held_by_another_program_is_one_line(serve):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, seconds, stdout, stderr = _refused(serve, port)
    assert code != 0
    assert seconds < 5
    assert len(stderr.splitlines()) == 1, stderr  # before: a traceback per worker
    assert str(port) in stderr
    assert "Traceback" not in stderr + stdout


def test_a_worker_refused_by_the_configuration_stops_the_service_in_one_line(serve):
    assert serve(workers=1).stop() == 0  # the first start records the pepper's fingerprint
    refused = serve(workers=2, ready=False, INGEST_PEPPER="another-pepper-of-32-characters-or-more")
    assert refused.process.wait(timeout=60) == 2  # as any configuration error of the CLI
    stderr, stdout = refused.stderr.read_text(), refused.stdout.read_text()
    named = [line for line in stderr.splitlines() if "INGEST_PEPPER" in line]
    assert len(named) == 1, stderr  # once, whichever of the two workers failed first
    assert named[0].startswith("configuration error: INGEST_PEPPER: not the pepper")
    assert "Traceback" not in stderr + stdout  # before: a traceback per worker
    assert any(json.loads(line)["event"] == "worker_boot_failed" for line in stdout.splitlines())


def test_sigint_to_the_process_group_exits_0_every_time(serve):
    codes = []
    for _ in range(5):
        served = serve(workers=2)
        assert _get(f"{served.base}/healthz")[0] == 200
        codes.append(served.stop(signal.SIGINT))
    assert codes == [0] * 5  # before: 1 about half the time (workers got SIGINT twice)


async def test_under_load_every_log_line_is_one_json_object_and_a_stop_loses_nothing(serve, db_dsn):
    served = await asyncio.to_thread(serve, workers=2)
    accepted: set[str] = set()
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            body = json.dumps({"email": f"{uuid.uuid4().hex}@example.fi", "message": "load"}).encode()
            try:
                async with session.post(
                    f"{served.base}/v1/forms/partner-forms", data=body, headers=sign_standard(body)
                ) as response:
                    statuses.append(response.status)
                    if response.status in (200, 201):
                        accepted.add((await response.json())["submission_id"])
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)  # refused once the socket closed at the stop

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        clients = [asyncio.ensure_future(client(session)) for _ in range(16)]
        await asyncio.sleep(4)
        # Ctrl-C while requests are in flight: they finish, the writer drains, rc 0.
        code = await asyncio.to_thread(served.stop, signal.SIGINT)
        stop.set()
        await asyncio.gather(*clients)

    assert code == 0
    assert len(accepted) > 50
    assert 500 not in statuses
    conn = await asyncpg.connect(db_dsn)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM ingest.submissions WHERE submission_id = ANY($1::uuid[])", list(accepted)
        )
    finally:
        await conn.close()
    assert stored == len(accepted)  # every 2xx has its row

    lines = served.stdout.read_bytes().decode().splitlines()
    assert len(lines) > len(accepted)  # a request line each, at least
    for number, line in enumerate(lines, 1):
        record = json.loads(line)  # before: two records on one line now and then
        assert isinstance(record, dict), f"line {number}: {line[:200]}"
    records = [json.loads(line) for line in lines]
    # gunicorn's own records are JSON too, with the template and never the arguments.
    booted = {r["pid"] for r in records if r.get("message_template") == "Booting worker with pid: %s"}
    assert len(booted) == 2
    # The human line: once, on stderr, when the socket listens; nothing else there.
    assert served.stderr.read_text().splitlines() == [f"listening on {served.base} (2 workers)"]


def test_a_log_record_is_written_in_one_write_of_the_whole_line(monkeypatch):
    """Two processes writing to one pipe never split a line: one os.write per record, looped if partial."""
    from ingest import logs

    read, write = os.pipe()
    calls: list[bytes] = []
    real_write = os.write

    def partial_write(fd: int, data: bytes) -> int:
        chunk = bytes(data[:7])  # the kernel may take less than asked: the rest follows
        calls.append(chunk)
        return real_write(fd, chunk)

    with open(write, "w", closefd=True) as stream:  # noqa: PTH123 - a pipe, not a path
        logs.configure_logging(stream)
        monkeypatch.setattr(logs.os, "write", partial_write)
        logs.structlog.get_logger("t").info("one_record", count=1)
        monkeypatch.setattr(logs.os, "write", real_write)
        stream.write("")  # nothing buffered in the text layer
    with open(read, "rb") as pipe:  # noqa: PTH123
        written = pipe.read()
    logs.configure_logging(io.StringIO())
    assert written.count(b"\n") == 1 and written.endswith(b"\n")
    assert json.loads(written)["event"] == "one_record"
    assert b"".join(calls) == written  # all of it through os.write, nothing buffered elsewhere
    assert len(calls) == -(-len(written) // 7)
